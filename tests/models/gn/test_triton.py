"""The Graph Network end to end on the Triton kernels (CPU interpreter) against TorchMD-Net's
stored outputs and the reference path, with exact filters and radial tables, its stress (strain
derivative) against finite differences, and the backend's refusals."""

import copy

import numpy as np
import pytest
import torch

import fastnnp
from fastnnp.models.common.radial_table import attach_radial_tables, radial_tables
from fastnnp.models.gn.triton import TritonGraphNetwork
from tests.helpers.kernel_cases import random_system
from fastnnp.step import EnergyStep
from tests.helpers.backends import TINY, assert_compiled_matches_eager, reference_and_triton, shipped_checkpoint_on_triton

HPARAMS = TINY["gn"]
from tests.helpers.parity import assert_matches



@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
@pytest.mark.parametrize("radial", ["auto", "exact"])
def test_shipped_checkpoint_matches_torchmdnet(data_dir, periodic, radial):
    model = shipped_checkpoint_on_triton(data_dir, "gn", periodic, radial)
    representation = model.representation_model
    assert isinstance(representation, TritonGraphNetwork)
    # "auto" on Triton (float32): tables for the neighbour embedding and every interaction
    assert len(radial_tables(model)) == (0 if radial == "exact" else 1 + len(representation.interactions))


def _pair(**overrides):
    """The same random-weight model on both backends."""
    return reference_and_triton({**HPARAMS, **overrides})


VARIANTS = {
    "add": {},
    "mean": {"aggr": "mean"},
    "max": {"aggr": "max"},
    "no-neighbor-embedding": {"neighbor_embedding": False},
    "gauss-lower-ssp-max": {"rbf_type": "gauss", "cutoff_lower": 0.6, "activation": "ssp", "aggr": "max"},
    "gauss-lower-mean": {"rbf_type": "gauss", "cutoff_lower": 0.6, "aggr": "mean"},
}


@pytest.mark.parametrize("kind", ["open", "periodic", "batched"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_reference_path(kind, name):
    reference, triton = _pair(**VARIANTS[name])
    z, pos, batch, box = random_system(kind, seed=2)
    assert_matches(*triton(z, pos, batch, box=box), *reference(z, pos, batch, box=box), torch.float32)


@pytest.mark.parametrize("kind", ["open", "periodic"])
@pytest.mark.parametrize("name", ["add", "gauss-lower-ssp-max"])
def test_tables_match_exact_reference_path(kind, name):
    """The table kernels (float32 tables as radial="auto" builds them) against the exact filters
    of the reference path in float64: both the tables' and the kernels' errors must fit."""
    reference, triton = _pair(**VARIANTS[name])
    tables = attach_radial_tables(triton.representation_model, torch.float32, "table")
    assert len(tables) == 1 + HPARAMS["num_layers"]
    reference = reference.double()
    z, pos, batch, box = random_system(kind, seed=2)
    expected = reference(z, pos.double(), batch, box=None if box is None else box.double())
    assert_matches(*triton(z, pos, batch, box=box), *expected, torch.float32)


def _strained_energy(model, z, pos, batch, box, strain):
    """The total energy at positions and cell strained by the symmetric ``strain`` (x (1 + e))."""
    symmetric = 0.5 * (strain + strain.T)
    energy, _ = model(z, pos + pos @ symmetric, batch, box=box + box @ symmetric)
    return energy.sum()


@pytest.mark.parametrize("name", ["add", "max"])
def test_stress_matches_finite_differences(name):
    """dE/d(strain) of the Triton model (autograd through the kernels, the box gradient through
    table_vectors) against central differences of the same weights' reference path in float64
    on a periodic triclinic box."""
    reference, triton = _pair(**VARIANTS[name])
    z, pos, batch, box = random_system("periodic", seed=3)
    strain = torch.zeros(3, 3, requires_grad=True)
    (got,) = torch.autograd.grad(_strained_energy(triton, z, pos, batch, box, strain), strain)
    reference64 = copy.deepcopy(reference).double()
    pos64, box64 = pos.double(), box.double()
    step = 1e-5
    expected = torch.zeros(3, 3, dtype=torch.float64)
    with torch.no_grad():
        for a in range(3):
            for b in range(3):
                e = torch.zeros(3, 3, dtype=torch.float64)
                e[a, b] = step
                plus = _strained_energy(reference64, z, pos64, batch, box64, e)
                minus = _strained_energy(reference64, z, pos64, batch, box64, -e)
                expected[a, b] = (plus - minus) / (2 * step)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_box_gradient_matches_reference_path():
    reference, triton = _pair(aggr="mean")
    z, pos, batch, box = random_system("periodic", seed=3)
    grads = []
    for model in (reference, triton):
        cell = box.clone().requires_grad_()
        energy, _ = model(z, pos, batch, box=cell)
        grads.append(torch.autograd.grad(energy.sum(), cell)[0])
    assert grads[0].abs().max() > 1e-2
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_state_dict_keys_match_reference():
    reference, triton = _pair()
    assert list(triton.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("radial", ["table", "exact"])
def test_compiled_triton_path_matches_eager(data_dir, radial):
    """torch.compile(fullgraph=True, backend="aot_eager") of the energy gives eager's energy and
    forces (plan made by an eager call)."""
    model = fastnnp.load_model(data_dir / "gn" / "model.ckpt", backend="triton", radial=radial)
    ref = np.load(data_dir / "gn" / "reference.npz")
    keep = torch.as_tensor(ref["batch"]) == 0
    z, pos = torch.as_tensor(ref["z"])[keep], torch.as_tensor(ref["pos"], dtype=torch.float32)[keep]
    step = EnergyStep(model, z, pos)
    step.run(pos)

    def energy(p):
        return model.checked_energy_terms(step.z, p, step.batch, None, None, step.n_systems, None)[0]

    assert_compiled_matches_eager(energy, pos)
