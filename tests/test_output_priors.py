"""Parity of fastnnp's output heads and priors with TorchMD-Net 3.1's own classes.

Each TorchMD-Net module gets seeded random weights, its state dict is loaded (strictly) into
the fastnnp module, and both run on the same small random batch; values and gradients with
respect to the positions must agree to 1e-5 (float32) / 1e-9 (float64) of their scale.
"""

import math
import warnings

import pytest
import torch


from torchmdnet import priors as tmn_priors  # noqa: E402
from torchmdnet.models import output_modules as tmn_out  # noqa: E402
from torchmdnet.models.model import TorchMD_Net, create_prior_models  # noqa: E402
from torchmdnet.models.utils import GatedEquivariantBlock as TmnGated  # noqa: E402
from torchmdnet.utils import atomic_masses as tmn_atomic_masses  # noqa: E402

from fastnnp import priors as fp  # noqa: E402
from fastnnp.models import output_modules as fo  # noqa: E402
from fastnnp.models.common.mlp import GatedEquivariantBlock  # noqa: E402
from fastnnp.neighbors import neighbor_list  # noqa: E402
from fastnnp.neighbors.reuse import VerletNeighborList, neighbor_builds, use_verlet_skin  # noqa: E402

F = 16
DTYPES = [torch.float32, torch.float64]
RTOL = {torch.float32: 1e-5, torch.float64: 1e-9}
ANGSTROM = 1e-10  # m
EV = 1.602176634e-19  # J
HARTREE = 4.3597447222071e-18  # J


def close(actual, expected, dtype=None):
    """Equal to ``RTOL`` of the expected tensor's scale (its largest magnitude)."""
    dtype = dtype or expected.dtype
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert torch.isfinite(expected).all()
    scale = max(expected.abs().max().item(), 1e-30)
    torch.testing.assert_close(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def make_batch(dtype, seed=0, sizes=(3, 2, 3), spread=2.5, zmax=17):
    """Molecules of ``sizes`` atoms, z in 1..zmax, positions in a cube of ``spread`` Angstrom
    (atoms at least 0.7 Angstrom apart), x [N, F] and v [N, 3, F] random features."""
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    n = batch.shape[0]
    while True:
        pos = torch.rand(n, 3, generator=gen, dtype=torch.float64) * spread
        d = torch.cdist(pos, pos) + torch.eye(n) * 10
        if d.min() > 0.7:
            break
    z = torch.randint(1, zmax + 1, (n,), generator=gen)
    x = torch.randn(n, F, generator=gen, dtype=torch.float64)
    v = torch.randn(n, 3, F, generator=gen, dtype=torch.float64)
    return z, pos.to(dtype), batch, x.to(dtype), v.to(dtype)


def perturb(module, seed=1, scale=0.3):
    """Random weights (and biases) for every floating parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
    return module


def copy_state(ours, theirs):
    """Strictly load TorchMD-Net's state dict (minus its neighbour-list box) into ours."""
    state = {k: v for k, v in theirs.state_dict().items()
             if not k.endswith(("distance.box", "distances.box"))}
    ours.load_state_dict(state, strict=True)
    return ours


# --------------------------------------------------------------------------- output modules

HEADS = [  # (TorchMD-Net class, fastnnp class, MLP-based)
    ("Scalar", "Scalar", True),
    ("EquivariantScalar", "EquivariantScalar", False),
    ("DipoleMoment", "DipoleMoment", True),
    ("EquivariantDipoleMoment", "EquivariantDipoleMoment", False),
    ("ElectronicSpatialExtent", "ElectronicSpatialExtent", True),
    ("EquivariantElectronicSpatialExtent", "EquivariantElectronicSpatialExtent", True),
    ("EquivariantVectorOutput", "EquivariantVectorOutput", False),
]
HEAD_CASES = [
    pytest.param(t, o, nh, red, dt, id=f"{o}-h{nh}-{red}-{str(dt)[6:]}")
    for t, o, mlp in HEADS
    for nh in ((0, 1) if mlp else (0,))
    for red in ("add", "mean")
    for dt in DTYPES
]


@pytest.mark.parametrize("tmn_name, our_name, hidden, reduce_op, dtype", HEAD_CASES)
def test_output_module_parity(tmn_name, our_name, hidden, reduce_op, dtype):
    torch.manual_seed(0)
    # TorchMD-Net's MLP heads read their depth from ``num_layers`` (bug #343).
    theirs = getattr(tmn_out, tmn_name)(F, activation="silu", reduce_op=reduce_op, dtype=dtype,
                                         num_layers=hidden)
    perturb(theirs)
    ours = fo.output_model_class(our_name, False)(F, "silu", reduce_op, dtype, hidden)
    copy_state(ours, theirs)
    assert ours.allow_prior_model == theirs.allow_prior_model
    assert fo.infer_num_hidden_layers(theirs.state_dict().keys(), prefix="") == hidden

    z, pos, batch, x, v = make_batch(dtype)
    n_systems = int(batch.max()) + 1
    results = []
    for module in (theirs, ours):
        p = pos.clone().requires_grad_(True)
        xx, vv = x.clone().requires_grad_(True), v.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if module is theirs:
                atom = module.pre_reduce(xx, vv, z, p, batch)
                red = module.reduce(atom, batch, num_systems=n_systems)
            else:
                atom = module.pre_reduce(xx, vv, z, p, batch)
                red = module.reduce(atom, batch, n_systems)
        out = module.post_reduce(red)
        grads = torch.autograd.grad(out.sum(), (p, xx, vv), allow_unused=True)
        results.append((atom, red, out, grads))
    (a0, r0, o0, g0), (a1, r1, o1, g1) = results
    close(a1, a0)
    close(r1, r0)
    close(o1, o0)
    for mine, ref in zip(g1, g0, strict=True):
        if ref is None:
            assert mine is None or not mine.any()
        else:
            close(mine, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["ssp", "tanh", "sigmoid", "swish", "mish"])
def test_output_module_activations(activation, dtype):
    """Other activations, in both head kinds (ssp with TorchMD-Net's float32-rounded log 2)."""
    z, pos, batch, x, v = make_batch(dtype)
    for name in ("Scalar", "EquivariantScalar"):
        theirs = perturb(getattr(tmn_out, name)(F, activation=activation, dtype=dtype))
        ours = copy_state(getattr(fo, name)(F, activation, dtype=dtype), theirs)
        close(ours.pre_reduce(x, v, z, pos, batch), theirs.pre_reduce(x, v, z, pos, batch))


def test_atomic_masses_match_torchmdnet():
    ours = fo.DipoleMoment(F, dtype=torch.float64).atomic_mass
    assert torch.equal(ours, torch.from_numpy(tmn_atomic_masses))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_block_zero_vectors(dtype):
    """An atom with all-zero vector features: same values as TorchMD-Net, finite gradients."""
    torch.manual_seed(0)
    theirs = perturb(TmnGated(F, 4, activation="silu", scalar_activation=True, dtype=dtype))
    ours = copy_state(GatedEquivariantBlock(F, 4, activation="silu", scalar_activation=True,
                                            dtype=dtype), theirs)
    _, _, _, x, v = make_batch(dtype)
    v[2] = 0
    outs = []
    for module in (theirs, ours):
        xx, vv = x.clone().requires_grad_(True), v.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xo, vo = module(xx, vv)
        grads = torch.autograd.grad((xo**2).sum() + (vo**2).sum(), (xx, vv))
        outs.append((xo, vo) + grads)
    for mine, ref in zip(outs[1], outs[0], strict=True):
        assert torch.isfinite(mine).all()
        close(mine, ref)


def test_output_model_class_names():
    assert fo.output_model_class("Scalar", False) is fo.Scalar
    assert fo.output_model_class("Scalar", True) is fo.EquivariantScalar
    assert fo.output_model_class("DipoleMoment", True) is fo.EquivariantDipoleMoment
    assert fo.output_model_class("VectorOutput", True) is fo.EquivariantVectorOutput
    assert (fo.output_model_class("ElectronicSpatialExtent", True)
            is fo.EquivariantElectronicSpatialExtent)
    with pytest.raises(ValueError, match="VectorOutput"):
        fo.output_model_class("VectorOutput", False)
    with pytest.raises(ValueError, match="NoSuchHead"):
        fo.output_model_class("NoSuchHead", False)
    with pytest.raises(ValueError, match="reduce_op"):
        fo.Scalar(F, reduce_op="median")


def test_vector_output_always_sums():
    assert fo.EquivariantVectorOutput(F, reduce_op="mean").reduce_op == "sum"


def test_infer_num_hidden_layers():
    prefix = "output_model."

    def keys(module):
        return [prefix + k for k in module.state_dict()] + ["representation_model.layers.0.weight"]

    for hidden in (0, 1, 3):
        assert fo.infer_num_hidden_layers(keys(fo.Scalar(F, num_hidden_layers=hidden))) == hidden
        assert fo.infer_num_hidden_layers(
            keys(fo.EquivariantScalar(F, num_hidden_layers=hidden))) == hidden
    # keys of checkpoints older than TorchMD-Net PR #314
    old_mlp = [prefix + f"output_network.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    assert fo.infer_num_hidden_layers(old_mlp) == 0
    old_gated = [prefix + f"output_network.{b}.update_net.{i}.weight" for b in (0, 1) for i in (0, 2)]
    assert fo.infer_num_hidden_layers(old_gated + [prefix + "output_network.0.vec1_proj.weight"]) == 0
    with pytest.raises(ValueError):
        fo.infer_num_hidden_layers(["representation_model.x.weight"])
    with pytest.raises(ValueError):
        fo.infer_num_hidden_layers([prefix + "output_network.layers.0.weight",
                                    prefix + "output_network.layers.4.weight"])


# --------------------------------------------------------------------------- priors

ZBL_ARGS = dict(cutoff_distance=4.0, max_num_neighbors=32, atomic_number=list(range(20)),
                distance_scale=ANGSTROM, energy_scale=EV)
D2_ARGS = dict(cutoff_distance=8.0, max_num_neighbors=32, atomic_number=list(range(20)),
               distance_scale=ANGSTROM, energy_scale=HARTREE)
COULOMB_ARGS = dict(lower_switch_distance=0.09, upper_switch_distance=0.21, max_num_neighbors=32,
                    distance_scale=ANGSTROM, energy_scale=EV)


def run_post(prior, y, z, pos, batch, box=None, extra_args=None):
    """post_reduce and its gradient with respect to the positions."""
    p = pos.clone().requires_grad_(True)
    out = prior.post_reduce(y, z, p, batch, box, extra_args)
    (grad,) = torch.autograd.grad(out.sum(), p)
    return out, grad


def assert_prior_parity(ours, theirs, dtype, box=None, extra_args=None, **batch_kw):
    z, pos, batch, _, _ = make_batch(dtype, **batch_kw)
    y = torch.randn(int(batch.max()) + 1, 1, dtype=dtype)
    out0, g0 = run_post(theirs, y, z, pos, batch, box, extra_args)
    out1, g1 = run_post(ours, y, z, pos, batch, box, extra_args)
    assert not torch.equal(out0, y), "the prior added nothing: weak test"
    close(out1 - y, out0 - y)
    close(out1, out0)
    close(g1, g0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("enable", [True, False])
def test_atomref_parity(dtype, enable):
    theirs = tmn_priors.Atomref(max_z=20, enable=enable)
    with torch.no_grad():
        table = torch.randn(20, 1, generator=torch.Generator().manual_seed(3))
        theirs.initial_atomref.copy_(table)
        theirs.atomref.weight.copy_(table * 2)  # a trained table differs from the initial one
    theirs = theirs.to(dtype)
    ours = copy_state(fp.Atomref(max_z=20, enable=enable), theirs).to(dtype)
    z, pos, batch, x, _ = make_batch(dtype)
    x = x[:, :1]
    out0 = theirs.pre_reduce(x, z, pos, batch, None)
    out1 = ours.pre_reduce(x, z, pos, batch, None)
    close(out1, out0)
    assert torch.equal(out1, x) != enable
    # identity after the reduction
    y = torch.randn(3, 1, dtype=dtype)
    assert torch.equal(ours.post_reduce(y, z, pos, batch, None, None), y)


def test_prior_buffers_match_torchmdnet_constructors():
    """Freshly built priors hold the same state (keys and values) as TorchMD-Net's."""
    pairs = [
        (fp.Atomref(max_z=30), tmn_priors.Atomref(max_z=30)),
        (fp.ZBL(**ZBL_ARGS), tmn_priors.ZBL(**ZBL_ARGS)),
        (fp.D2(**D2_ARGS), tmn_priors.D2(**D2_ARGS)),
        (fp.Coulomb(**COULOMB_ARGS), tmn_priors.Coulomb(**COULOMB_ARGS)),
    ]
    for ours, theirs in pairs:
        theirs_state = {k: v for k, v in theirs.state_dict().items()
                        if not k.endswith(("distance.box", "distances.box"))}
        ours_state = ours.state_dict()
        assert ours_state.keys() == theirs_state.keys(), type(ours)
        for key, value in theirs_state.items():
            assert ours_state[key].dtype == value.dtype, key
            assert torch.equal(ours_state[key].nan_to_num(), value.nan_to_num()), key
    # D2 in float64 as TorchMD-Net builds it (float32 table cast by the model)
    theirs = tmn_priors.D2(**D2_ARGS).to(torch.float64)
    ours = fp.D2(**D2_ARGS).to(torch.float64)
    assert torch.equal(ours.C_6[1:], theirs.C_6[1:]) and torch.equal(ours.R_r[1:], theirs.R_r[1:])


@pytest.mark.parametrize("dtype", DTYPES)
def test_zbl_open_parity(dtype):
    theirs = tmn_priors.ZBL(**ZBL_ARGS).to(dtype)
    ours = copy_state(fp.ZBL(**ZBL_ARGS), theirs).to(dtype)
    assert_prior_parity(ours, theirs, dtype)




BOXES = {
    "orthorhombic": [[9.0, 0.0, 0.0], [0.0, 9.5, 0.0], [0.0, 0.0, 10.0]],
    "triclinic": [[9.0, 0.0, 0.0], [1.5, 9.0, 0.0], [-1.0, 2.0, 9.5]],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("box_name", list(BOXES))
def test_zbl_periodic_parity(dtype, box_name):
    box = torch.tensor(BOXES[box_name], dtype=dtype)
    theirs = tmn_priors.ZBL(**ZBL_ARGS).to(dtype)
    ours = copy_state(fp.ZBL(**ZBL_ARGS), theirs).to(dtype)
    # atoms fill the box: many pairs are closer through a periodic image
    assert_prior_parity(ours, theirs, dtype, box=box, sizes=(6, 5), spread=9.0)
    z, pos, batch, _, _ = make_batch(dtype, sizes=(6, 5), spread=9.0)
    y = torch.zeros(2, 1, dtype=dtype)
    open_energy = ours.post_reduce(y, z, pos, batch, None, None)
    assert not torch.allclose(open_energy, ours.post_reduce(y, z, pos, batch, box, None))


@pytest.mark.parametrize("dtype", DTYPES)
def test_d2_parity(dtype):
    theirs = tmn_priors.D2(**D2_ARGS).to(dtype)
    ours = copy_state(fp.D2(**D2_ARGS), theirs).to(dtype)
    assert_prior_parity(ours, theirs, dtype, spread=6.0)
    # the box is ignored (no periodic images), in both
    box = torch.eye(3, dtype=dtype) * 20.0
    assert_prior_parity(ours, theirs, dtype, box=box, spread=6.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["ZBL", "D2"])
def test_pair_priors_search_through_the_verlet_cache(dtype, name):
    """use_verlet_skin covers ZBL and D2 (their neighbor_search hook): one search for small
    moves, and values and gradients bit-identical to the plain search's."""
    cls, args = (fp.ZBL, ZBL_ARGS) if name == "ZBL" else (fp.D2, D2_ARGS)
    plain, cached = cls(**args).to(dtype), cls(**args).to(dtype)
    assert plain.neighbor_search is neighbor_list
    use_verlet_skin(cached, 0.5)
    assert isinstance(cached.neighbor_search, VerletNeighborList)
    z, pos, batch, _, _ = make_batch(dtype, sizes=(6, 5), spread=9.0)
    box = torch.tensor(BOXES["triclinic"], dtype=dtype) if name == "ZBL" else None
    y = torch.zeros(2, 1, dtype=dtype)
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        pos = pos + (0.01 * torch.randn(pos.shape, generator=gen, dtype=torch.float64)).to(dtype)
        out0, g0 = run_post(plain, y, z, pos, batch, box)
        out1, g1 = run_post(cached, y, z, pos, batch, box)
        assert not torch.equal(out0, y), "the prior added nothing: weak test"
        assert torch.equal(out1, out0) and torch.equal(g1, g0)
    assert neighbor_builds(cached) == 1
    use_verlet_skin(cached, 0)
    assert cached.neighbor_search is neighbor_list


def charges_for(seed, n, dtype):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_coulomb_parity(dtype):
    theirs = tmn_priors.Coulomb(**COULOMB_ARGS).to(dtype)
    ours = copy_state(fp.Coulomb(**COULOMB_ARGS), theirs).to(dtype)
    n = len(make_batch(dtype)[0])
    extra = {"partial_charges": charges_for(5, n, dtype)}
    assert_prior_parity(ours, theirs, dtype, extra_args=extra)


@pytest.mark.parametrize("dtype", DTYPES)
def test_coulomb_periodic_parity(dtype):
    """nm data (distance_scale 1e-9), box passed to post_reduce and box_vecs at construction."""
    args = dict(COULOMB_ARGS, distance_scale=1e-9, lower_switch_distance=0.6,
                upper_switch_distance=1.3)
    box = torch.tensor(BOXES["triclinic"], dtype=dtype) * 0.3
    theirs = tmn_priors.Coulomb(**args).to(dtype)
    ours = copy_state(fp.Coulomb(**args), theirs).to(dtype)
    n = 11
    extra = {"partial_charges": charges_for(6, n, dtype)}
    assert_prior_parity(ours, theirs, dtype, box=box, extra_args=extra, sizes=(6, 5),
                        spread=2.7)
    theirs = tmn_priors.Coulomb(**args, box_vecs=box).to(dtype)
    ours = fp.Coulomb(**args, box_vecs=box).to(dtype)
    assert_prior_parity(ours, theirs, dtype, extra_args=extra, sizes=(6, 5), spread=2.7)
    z, pos, batch, _, _ = make_batch(dtype, sizes=(6, 5), spread=2.7)
    y = torch.zeros(2, 1, dtype=dtype)
    open_energy = fp.Coulomb(**args).to(dtype).post_reduce(y, z, pos, batch, None, extra)
    assert not torch.allclose(open_energy, ours.post_reduce(y, z, pos, batch, None, extra))


def test_coulomb_needs_partial_charges():
    z, pos, batch, _, _ = make_batch(torch.float32)
    prior = fp.Coulomb(**COULOMB_ARGS)
    y = torch.zeros(3, 1)
    for extra in (None, {}, {"other": torch.zeros(len(z))}):
        with pytest.raises(ValueError, match="partial_charges"):
            prior.post_reduce(y, z, pos, batch, None, extra)
    with pytest.raises(ValueError, match="partial_charges"):
        prior.post_reduce(y, z, pos, batch, None, {"partial_charges": torch.zeros(3)})


def test_post_reduce_priors_handle_systems_without_pairs():
    """A lone atom last in the batch: its system gets 0 (TorchMD-Net's D2 and Coulomb fail
    to reshape here; ZBL pads with zeros)."""
    z, pos, batch, _, _ = make_batch(torch.float64, sizes=(3, 4, 1))
    y = torch.zeros(3, 1, dtype=torch.float64)
    extra = {"partial_charges": charges_for(1, 8, torch.float64)}
    for prior in (fp.ZBL(**ZBL_ARGS), fp.D2(**D2_ARGS), fp.Coulomb(**COULOMB_ARGS)):
        out = prior.to(torch.float64).post_reduce(y, z, pos, batch, None, extra)
        assert out.shape == (3, 1) and out[2, 0] == 0 and (out[:2] != 0).all()


# --------------------------------------------------------------------------- whole pipeline


class _Features(torch.nn.Module):
    """A fixed, smooth stand-in for a representation model: (x, v) from z and pos."""

    def __init__(self, dtype):
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.emb = torch.randn(20, F, generator=gen, dtype=torch.float64).to(dtype)
        self.proj = torch.randn(3, F, generator=gen, dtype=torch.float64).to(dtype)

    def reset_parameters(self):
        pass

    def forward(self, z, pos, batch, box=None, q=None, s=None):
        x = torch.sin(pos @ self.proj + self.emb[z])
        v = pos.unsqueeze(-1) * torch.cos(x).unsqueeze(1)
        return x, v, z, pos, batch


def _fastnnp_forward(features, head, priors, z, pos, batch, std, mean, box, extra):
    """TorchMD-Net's forward order, spelled out with fastnnp parts."""
    x, v, z, pos, batch = features(z, pos, batch)
    x = head.pre_reduce(x, v, z, pos, batch) * std
    for prior in priors:
        x = prior.pre_reduce(x, z, pos, batch, extra)
    y = head.post_reduce(head.reduce(x, batch, int(batch.max()) + 1) + mean)
    for prior in priors:
        y = prior.post_reduce(y, z, pos, batch, box, extra)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce_op", ["add", "mean"])
@pytest.mark.parametrize("equivariant", [False, True])
def test_energy_and_forces_with_all_priors(dtype, reduce_op, equivariant):
    """Head + Atomref + ZBL + D2 + Coulomb through TorchMD_Net.forward vs fastnnp parts."""
    head_name = "EquivariantScalar" if equivariant else "Scalar"
    tmn_head = perturb(getattr(tmn_out, head_name)(F, reduce_op=reduce_op, dtype=dtype))
    tmn_prior_list = [tmn_priors.Atomref(max_z=20), tmn_priors.ZBL(**ZBL_ARGS),
                      tmn_priors.D2(**D2_ARGS), tmn_priors.Coulomb(**COULOMB_ARGS)]
    with torch.no_grad():
        tmn_prior_list[0].atomref.weight.normal_(generator=torch.Generator().manual_seed(4))
    model = TorchMD_Net(_Features(dtype), tmn_head, prior_model=tmn_prior_list,
                        mean=torch.tensor(0.7), std=torch.tensor(1.3), derivative=True,
                        dtype=dtype)
    head = copy_state(fo.output_model_class("Scalar", equivariant)(F, reduce_op=reduce_op,
                                                                   dtype=dtype), tmn_head)
    priors = [copy_state(ours, theirs).to(dtype) for ours, theirs in zip(
        [fp.Atomref(max_z=20), fp.ZBL(**ZBL_ARGS), fp.D2(**D2_ARGS), fp.Coulomb(**COULOMB_ARGS)],
        model.prior_model, strict=True)]
    z, pos, batch, _, _ = make_batch(dtype, spread=3.0)
    extra = {"partial_charges": charges_for(2, len(z), dtype)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y0, neg_dy0 = model(z, pos.clone(), batch, extra_args=extra)
    p = pos.clone().requires_grad_(True)
    y1 = _fastnnp_forward(model.representation_model, head, priors, z, p, batch,
                          model.std, model.mean, None, extra)
    (dy1,) = torch.autograd.grad(y1.sum(), p)
    close(y1, y0.detach())
    close(-dy1, neg_dy0)


# --------------------------------------------------------------------------- build_priors

ATOMREF_DISABLED = {"max_z": 20, "trainable": False, "enable": False}


@pytest.mark.parametrize("hparams, expected", [
    ({"prior_model": None}, []),
    ({"prior_model": []}, []),
    ({"prior_model": "Atomref", "prior_args": {"max_z": 20}}, [("Atomref", 20, True)]),
    ({"prior_model": ["Atomref", "ZBL"], "prior_args": [{"max_z": 20}, ZBL_ARGS]},
     [("Atomref", 20, True), ("ZBL",)]),
    ({"prior_model": [{"Atomref": {"max_z": 20}}, {"D2": D2_ARGS}]},
     [("Atomref", 20, True), ("D2",)]),
    ({"prior_model": {"ZBL": ZBL_ARGS, "Coulomb": COULOMB_ARGS}}, [("ZBL",), ("Coulomb",)]),
    ({"prior_model": {"Atomref": {"max_z": 20}}, "prior_args": None}, [("Atomref", 20, True)]),
    # torchmd-train with remove_ref_energy: inline args replaced by get_init_args()
    ({"prior_model": ["ZBL", {"Atomref": {"enable": False}}],
      "prior_args": [ZBL_ARGS, ATOMREF_DISABLED]}, [("ZBL",), ("Atomref", 20, False)]),
    ({"prior_model": [{"LearnableAtomref": None}], "prior_args": [ATOMREF_DISABLED]},
     [("LearnableAtomref", 20, True)]),
])
def test_build_priors_forms(hparams, expected):
    built = fp.build_priors(hparams)
    assert [type(p).__name__ for p in built] == [e[0] for e in expected]
    for prior, exp in zip(built, expected, strict=True):
        if len(exp) > 1:
            assert prior.initial_atomref.shape == (exp[1], 1)
            assert prior.enable is exp[2]
    # TorchMD-Net builds the same list from the same hyper-parameters
    if "LearnableAtomref" not in str(hparams):  # TorchMD-Net's own class rejects its init args
        theirs = create_prior_models(dict(hparams))
        assert [type(p).__name__ for p in theirs] == [type(p).__name__ for p in built]
        for ours, their in zip(built, theirs, strict=True):
            copy_state(ours, their)


def test_build_priors_from_torchmd_train_checkpoint_args():
    """prior_args exactly as torchmd-train stores them: get_init_args() of each prior."""
    args = {"prior_model": [{"Atomref": {"max_z": 20}}, {"ZBL": ZBL_ARGS}, {"D2": D2_ARGS},
                            {"Coulomb": COULOMB_ARGS}, {"Atomref": {"max_z": 20, "enable": False}}]}
    tmn_list = create_prior_models(args)
    hparams = dict(args, prior_args=[p.get_init_args() for p in tmn_list],
                   remove_ref_energy=True)
    assert "initial_box" in hparams["prior_args"][3]  # what TorchMD-Net's Coulomb cannot read
    built = fp.build_priors(hparams)
    assert [type(p).__name__ for p in built] == ["Atomref", "ZBL", "D2", "Coulomb", "Atomref"]
    for ours, theirs in zip(built, tmn_list, strict=True):
        copy_state(ours, theirs)
    assert built[0].enable and not built[-1].enable


def test_build_priors_errors():
    with pytest.raises(ValueError, match="NoSuchPrior"):
        fp.build_priors({"prior_model": ["Atomref", "NoSuchPrior"],
                         "prior_args": [{"max_z": 5}, {}]})
    with pytest.raises(ValueError, match="max_z"):
        fp.build_priors({"prior_model": "Atomref"})
    with pytest.raises(ValueError, match="ZBL"):
        fp.build_priors({"prior_model": "ZBL", "prior_args": {"cutoff_distance": 4.0}})
    with pytest.raises(ValueError, match="D2"):
        fp.build_priors({"prior_model": "D2", "prior_args": {"cutoff": 4.0}})
    # more names than prior_args: TorchMD-Net zips them; so do we, with a warning
    hparams = {"prior_model": ["Atomref", "ZBL"], "prior_args": [{"max_z": 5}]}
    with pytest.warns(UserWarning, match="prior_args"):
        built = fp.build_priors(hparams)
    assert len(built) == len(create_prior_models(dict(hparams))) == 1


def test_coulomb_is_physical_only_for_nm_data():
    """The reproduced TorchMD-Net unit quirk: nm data gives k q q / r, Angstrom data 10x it."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    z, batch = torch.tensor([1, 1]), torch.zeros(2, dtype=torch.long)
    extra = {"partial_charges": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    y = torch.zeros(1, 1, dtype=torch.float64)
    coulomb_ev_nm = 2.30707e-28 / EV / 1e-9  # e^2/(4 pi eps0) in eV nm, TorchMD-Net's rounding
    nm = fp.Coulomb(0.0, 0.01, distance_scale=1e-9, energy_scale=EV).to(torch.float64)
    assert math.isclose(nm.post_reduce(y, z, pos, batch, None, extra).item(), -coulomb_ev_nm)
    angstrom = fp.Coulomb(0.0, 0.01, distance_scale=1e-10, energy_scale=EV).to(torch.float64)
    assert math.isclose(angstrom.post_reduce(y, z, pos, batch, None, extra).item(),
                        -coulomb_ev_nm * 100)  # true value: -coulomb_ev_nm * 10
