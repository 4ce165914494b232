"""Variant checkpoints built with TorchMD-Net's own ``create_model``: hyper-parameters from the
shipped ``tests/data/tensornet/hparams.yaml``, every parameter randomised (seeded), written as a
Lightning-like ``.ckpt``; and the inputs they are evaluated on."""

import copy
import pathlib
import warnings
import zlib

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("torchmdnet")

from lightning_utilities.core.rank_zero import rank_zero_only  # noqa: E402
from torchmdnet.models import model as tmn_model  # noqa: E402

from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet  # noqa: E402
from tests.helpers import DATA  # noqa: E402
from tests.helpers.parity import assert_matches  # noqa: E402

DTYPES = {32: torch.float32, 64: torch.float64}
MAX_Z = 20
ANGSTROM, EV = 1e-10, 1.602176634e-19
KCAL_PER_MOL = 4184.0 / 6.02214076e23  # J

# small models: fast on 2 CPU cores
SMALL = dict(embedding_dimension=32, num_layers=2, num_rbf=16, cutoff_upper=4.5, max_z=MAX_Z,
             max_num_neighbors=64, num_heads=4)
MODELS = {"tn": "tensornet", "et": "equivariant-transformer", "gn": "graph-network"}

ZBL_ARGS = dict(cutoff_distance=3.0, max_num_neighbors=64, atomic_number=list(range(MAX_Z)),
                distance_scale=ANGSTROM, energy_scale=EV)
D2_ARGS = dict(cutoff_distance=6.0, max_num_neighbors=64, atomic_number=list(range(MAX_Z)),
               distance_scale=ANGSTROM, energy_scale=KCAL_PER_MOL)
COULOMB_ARGS = dict(lower_switch_distance=0.09, upper_switch_distance=0.21,
                    max_num_neighbors=64, distance_scale=ANGSTROM, energy_scale=EV)
PRIOR_ARGS = {"Atomref": {"max_z": MAX_Z}, "ZBL": ZBL_ARGS, "D2": D2_ARGS,
              "Coulomb": COULOMB_ARGS}

# a reduced triclinic cell (a_y = a_z = b_z = 0, widths >= 2 * cutoff, a_x >= 2 b_x ...)
TRICLINIC = [[9.6, 0.0, 0.0], [1.5, 9.4, 0.0], [-1.0, 2.0, 9.8]]
ORTHORHOMBIC = [[9.2, 0.0, 0.0], [0.0, 9.6, 0.0], [0.0, 0.0, 10.0]]


# ------------------------------------------------------------------------------ builders
def make_hparams(model="tn", **overrides) -> dict:
    """The shipped torchmd-train hparams, shrunk and modified."""
    with open(DATA / "tensornet" / "hparams.yaml") as fh:
        hp = yaml.safe_load(fh)
    hp.update(SMALL)
    hp["model"] = MODELS[model]
    hp.update(overrides)
    return hp


def priors_hparams(*names, delta=False) -> dict:
    """``prior_model``/``prior_args`` as torchmd-train stores them (one dict per prior)."""
    names = list(names)
    args = [copy.deepcopy(PRIOR_ARGS[n]) for n in names]
    if delta:  # training with remove_ref_energy appends a disabled Atomref
        names.append("Atomref")
        args.append({"max_z": MAX_Z, "trainable": False, "enable": False})
    out = dict(prior_model=names, prior_args=args)
    if delta:
        out["remove_ref_energy"] = True
    return out


def own_buffers_(model: torch.nn.Module) -> torch.nn.Module:
    """Give every buffer its own memory. A float64 TorchMD-Net DipoleMoment's or
    ElectronicSpatialExtent's ``atomic_mass`` is ``torch.from_numpy`` of the global
    ``torchmdnet.utils.atomic_masses``: writing into it would change that table for the
    whole test session."""
    for module in model.modules():
        for key, buf in module._buffers.items():
            if buf is not None:
                module._buffers[key] = buf.clone()
    return model


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Randomise every floating parameter and buffer in place (keeps RBF widths valid)."""
    g = torch.Generator().manual_seed(seed)
    own_buffers_(model)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if (not t.is_floating_point() or name.endswith(("distance.box", "distances.box"))
                    or leaf in ("C_6", "R_r")):
                continue
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            if leaf in ("betas", "coeff", "atomic_mass"):  # keep the sign: scale by 0.7..1.3
                t.mul_(1.0 + 0.3 * torch.tanh(noise))
            elif leaf in ("means", "offset"):
                t.add_(0.05 * noise)
            elif name == "std":
                t.copy_(torch.exp(0.4 * noise) + 0.2)
            elif name == "mean":
                t.copy_(0.8 * noise + 0.3)
            elif leaf in ("initial_atomref", "weight") and "prior_model" in name:
                t.copy_(noise)  # Atomref tables: O(1) per element, initial != trained
            else:  # weights and biases; small enough to keep float32 rounding << tolerance
                t.add_((0.05 if t.dim() > 1 else 0.1) * noise)


def seed_of(request) -> int:
    """A fixed seed per test id (different weights in every case)."""
    return zlib.crc32(request.node.callspec.id.encode()) % 100_000


def build_reference(hp: dict, seed: int = 0) -> torch.nn.Module:
    """TorchMD-Net's model for ``hp``, randomised, eval mode, on its pure-torch path."""
    if getattr(rank_zero_only, "rank", None) is None:  # TorchMD-Net warns via Lightning's
        rank_zero_only.rank = 0  # rank-zero helper, which raises outside a Trainer otherwise
    torch.manual_seed(seed)
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tmn_model.create_model(copy.deepcopy(hp))
    make_pure_torch(model)
    perturb_(model, seed + 1000)
    return model.eval()


def write_checkpoint(path, state_dict: dict, hp: dict) -> pathlib.Path:
    torch.save({"state_dict": {"model." + k: v for k, v in state_dict.items()},
                "hyper_parameters": hp, "pytorch-lightning_version": "2.6.6", "epoch": 0}, path)
    return pathlib.Path(path)


def reference_outputs(model, inputs: dict):
    """TorchMD-Net's (y, neg_dy) (pos cloned: its forward sets requires_grad in place)."""
    kw = dict(inputs)
    kw["pos"] = kw["pos"].clone()
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, neg_dy = model(**kw)[:2]
    return y.detach(), neg_dy.detach()


def fastnnp_outputs(model, inputs: dict):
    y, neg_dy = model(**inputs)[:2]
    return y.detach(), neg_dy.detach()


def check(ours, ref, dtype):
    (y, f), (ry, rf) = ours, ref
    assert y.shape == ry.shape, (y.shape, ry.shape)
    assert f.shape == rf.shape and f.dtype == rf.dtype == dtype
    assert torch.isfinite(ry).all() and torch.isfinite(rf).all()
    assert rf.abs().max() > 1e-3, "zero reference forces: weak test"
    assert_matches(y, f, ry, rf, dtype)



# -------------------------------------------------------------------------------- inputs
def molecules(dtype, names=("CH3CH2OH", "C6H6", "H2O"), seed=0) -> dict:
    """A batch of small molecules, slightly displaced from their ASE geometries."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    z, pos, batch = [], [], []
    for i, name in enumerate(names):
        atoms = molecule(name)
        z.append(atoms.numbers)
        pos.append(atoms.positions + 0.08 * rng.standard_normal(atoms.positions.shape))
        batch.append(np.full(len(atoms), i))
    return dict(z=torch.as_tensor(np.concatenate(z), dtype=torch.long),
                pos=torch.as_tensor(np.concatenate(pos)).to(dtype),
                batch=torch.as_tensor(np.concatenate(batch), dtype=torch.long))


def periodic_cells(dtype, box=TRICLINIC, sizes=(14, 11), seed=1) -> dict:
    """Random atoms filling a shared cell, two systems; many pairs only through an image,
    some atoms outside the cell. Atoms >= 1 Angstrom apart (minimum image)."""
    rng = np.random.default_rng(seed)
    cell = np.asarray(box)
    z, pos, batch = [], [], []
    for s, n in enumerate(sizes):
        while True:
            frac = rng.random((n, 3))
            p = frac @ cell
            d = p[:, None] - p[None]
            for axis in (2, 1, 0):
                d = d - np.round(d[..., axis] / cell[axis, axis])[..., None] * cell[axis]
            dist = np.linalg.norm(d, axis=-1) + np.eye(n) * 10
            if dist.min() > 1.0:
                break
        p = p + (rng.random((n, 3)) < 0.2) * rng.integers(-1, 2, (n, 3)) @ cell  # unwrapped
        z.append(rng.choice([1, 6, 7, 8], n))
        pos.append(p)
        batch.append(np.full(n, s))
    return dict(z=torch.as_tensor(np.concatenate(z), dtype=torch.long),
                pos=torch.as_tensor(np.concatenate(pos)).to(dtype),
                batch=torch.as_tensor(np.concatenate(batch), dtype=torch.long),
                box=torch.tensor(box, dtype=dtype))


def partial_charges(n, dtype, seed=7):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).mul(0.4).to(dtype)
