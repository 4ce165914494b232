"""TensorNet2 representation and Coulomb head against TorchMD-Net's pure-torch modules, in
cache-sized chunks and with recomputation; forces and stress against finite differences."""

import contextlib

import pytest
import torch

import fastnnp

pytest.importorskip("torchmdnet")

from torchmdnet.models.tensornet2 import TensorNet2 as ReferenceTensorNet2  # noqa: E402

from fastnnp.derivatives import energy_derivatives  # noqa: E402
from fastnnp.models.tensornet import atom_chunks  # noqa: E402
from fastnnp.models.tensornet2 import reference as tensornet2  # noqa: E402
from fastnnp.models.tensornet2 import TensorNet2  # noqa: E402
from fastnnp.models.tensornet2.charges import equilibrate  # noqa: E402
from tests.helpers.tensornet2 import (  # noqa: E402
    build_tensornet2,
    pure_torch_tensornet2,
    tensornet2_hparams,
)
from tests.helpers.variants import molecules, periodic_cells, write_checkpoint  # noqa: E402

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _pair(dtype, seed, **options):
    torch.manual_seed(seed)
    args = dict(hidden_channels=16, q_dim=2, num_layers=2, num_rbf=8, cutoff_upper=4.0, max_z=10,
                output_charges=True, **options)
    with pure_torch_tensornet2():
        reference = ReferenceTensorNet2(static_shapes=False, dtype=dtype, **args).to(dtype)
    for p in list(reference.parameters()) + [b for n, b in reference.named_buffers() if "repulsion" in n]:
        p.data += 0.1 * torch.randn_like(p)
    for module in reference.modules():
        if hasattr(module, "opt"):
            module.opt = False
    ours = TensorNet2(dtype=dtype, **args)
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k != "distance.box"})
    return reference, ours


def _batch(dtype):
    torch.manual_seed(7)
    z = torch.randint(1, 10, (13,))
    pos = (torch.randn(13, 3) * 1.1).to(dtype)  # dense: pairs inside the covalent radii (ZBL)
    batch = torch.tensor([0] * 5 + [1] * 8)
    q = torch.tensor([1.0, -2.0], dtype=dtype)
    return z, pos, batch, q


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("budget", [None, 2000], ids=["stored", "recomputed"])
@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
@pytest.mark.parametrize("cutoff_lower", [0.0, 0.8])
def test_features_charges_and_gradients_match(dtype, budget, group, cutoff_lower, monkeypatch):
    monkeypatch.setattr(tensornet2, "CACHE_CHUNK", 4)
    if budget is not None:
        monkeypatch.setattr(atom_chunks, "ATOM_CHUNK", 4)
    options = dict(equivariance_invariance_group=group, cutoff_lower=cutoff_lower, repulsion=True)
    reference, ours = _pair(dtype, seed=3, **options)
    if budget is not None:
        ours.memory_budget = budget
    z, pos, batch, q = _batch(dtype)
    weights = torch.randn(16 + 3 * 2, dtype=dtype, generator=torch.Generator().manual_seed(1))

    def run(model, context):
        p = pos.clone().requires_grad_(True)
        with context():
            x = model(z, p, batch, q=q)[0]
        energy = model.extra_energy
        objective = (x * weights).sum() + energy.sum()
        (grad,) = torch.autograd.grad(objective, p)
        return x.detach(), energy.detach(), grad

    ref = run(reference, pure_torch_tensornet2)
    mine = run(ours, contextlib.nullcontext)
    assert ref[1].abs().max() > 1e-3, "no repulsion: weak test"
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_equilibrate_hits_total_charge():
    """Sums reach Q up to eps / sum f^2; a system whose weights vanish keeps its raw charges."""
    g = torch.Generator().manual_seed(0)
    charges = torch.randn(7, 3, generator=g, dtype=torch.float64)
    weights = torch.randn(7, 3, generator=g, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    weights[5:] = 0.0
    total = torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)[batch]
    out = equilibrate(charges, weights, batch, total, 3)
    sums = torch.zeros(3, 3, dtype=torch.float64).index_add(0, batch, out)
    squares = torch.zeros(3, 3, dtype=torch.float64).index_add(0, batch, weights**2)
    raw = torch.zeros(3, 3, dtype=torch.float64).index_add(0, batch, charges)
    expected = raw + squares / (squares + 1e-6) * (torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)[:, None] - raw)
    torch.testing.assert_close(sums, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(sums[:2], torch.tensor([[1.0] * 3, [-1.0] * 3], dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[5:], charges[5:])


def _fd_model(tmp_path, **overrides):
    hp = tensornet2_hparams(precision=64, **overrides)
    reference = build_tensornet2(hp, seed=11)
    return fastnnp.load_model(write_checkpoint(tmp_path / "fd.ckpt", reference.state_dict(), hp))


@pytest.mark.parametrize("kind", ["open", "periodic"])
def test_forces_and_stress_equal_finite_differences(tmp_path, kind):
    """fp64: forces = -dE/dpos and stress = dE/dε / V by central differences (h = 1e-5),
    open molecules (all-to-all Coulomb) and a triclinic cell (reaction field, ZBL)."""
    if kind == "open":
        model = _fd_model(tmp_path)
        inputs = molecules(torch.float64, names=("CH3CH2OH", "H2O"))
        inputs["q"] = torch.tensor([1.0, -1.0], dtype=torch.float64)
        box = None
    else:
        model = _fd_model(tmp_path, coulomb_cutoff=4.5, repulsion=True)
        inputs = periodic_cells(torch.float64, sizes=(9, 7))
        inputs["q"] = torch.tensor([0.5, -1.0], dtype=torch.float64)
        box = inputs.pop("box").expand(2, 3, 3).clone()
    z, pos, batch, q = inputs["z"], inputs["pos"], inputs["batch"], inputs["q"]
    result = energy_derivatives(model, z, pos, batch, box, q)

    def energy(p, b):
        return model.energy_terms(z, p, batch, b, q)[0].detach().sum()

    h = 1e-5
    scale = max(1.0, result.forces.abs().max().item())
    for atom, axis in [(0, 0), (3, 1), (len(z) - 1, 2), (len(z) // 2, 0)]:
        step = torch.zeros_like(pos)
        step[atom, axis] = h
        fd = -(energy(pos + step, box) - energy(pos - step, box)) / (2 * h)
        assert abs(fd - result.forces[atom, axis]) <= 1e-6 * scale, (atom, axis, fd, result.forces[atom, axis])
    assert result.forces.abs().max() > 1e-2
    if box is None:
        assert result.stress is None
        return
    volume = torch.linalg.det(box)
    for a, b in [(0, 0), (1, 2), (0, 1), (2, 2)]:
        strain = torch.zeros(3, 3, dtype=torch.float64)
        strain[a, b] += h / 2
        strain[b, a] += h / 2

        def strained(sign):
            deform = torch.eye(3, dtype=torch.float64) + sign * strain
            return [model.energy_terms(z, pos @ deform, batch, box @ deform, q)[0].detach()[s, 0] for s in (0, 1)]

        plus, minus = strained(1.0), strained(-1.0)
        for s in (0, 1):
            fd = (plus[s] - minus[s]) / (2 * h) / volume[s]
            assert abs(fd - result.stress[s, a, b]) <= 1e-6 * max(1.0, result.stress.abs().max().item()), (s, a, b)


@pytest.mark.parametrize(
    "q_dim, q_weights, message",
    [(0, [[], [], []], "q_dim >= 1"), (2, [[1.0, -1.0], [0.5, -0.5], [0.0, 0.0]], "must not sum to zero"),
     (1, [[1.0], [float("nan")], [1.0]], "must be finite")],
)
def test_coulomb_head_refuses_unusable_charge_weights(q_dim, q_weights, message):
    from fastnnp.models.output_modules import ScalarPlusWeightedCoulomb

    with pytest.raises(ValueError, match=message):
        ScalarPlusWeightedCoulomb(8, q_dim=q_dim, num_layers=2, q_weights=q_weights)


def test_a_called_model_can_be_copied(tmp_path):
    """The representation's ZBL energies are read once per call: no autograd graph stays on the module."""
    import copy

    from tests.helpers.tensornet2 import build_tensornet2, tensornet2_hparams

    hp = tensornet2_hparams(repulsion=True)
    model = fastnnp.load_model(write_checkpoint(tmp_path / "model.ckpt", build_tensornet2(hp, seed=2).state_dict(), hp))
    inputs = molecules(torch.float32, names=("H2O",))
    energy, _ = model(inputs["z"], inputs["pos"], inputs["batch"])
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied(inputs["z"], inputs["pos"], inputs["batch"])[0], energy)
