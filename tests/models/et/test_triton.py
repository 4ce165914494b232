"""The Equivariant Transformer end to end on the Triton kernels (CPU interpreter) against
TorchMD-Net's stored outputs and against the reference path, with exact filters and with radial
tables; its stress against finite differences; and the backend's refusals."""

import pytest
import torch

from fastnnp.derivatives import energy_derivatives
from fastnnp.models.common.radial_table import attach_radial_tables, radial_tables
from fastnnp.models.et.triton import TritonEquivariantTransformer
from tests.helpers.kernel_cases import random_system
from tests.helpers.backends import TINY, assert_compiled_matches_eager, reference_and_triton, shipped_checkpoint_on_triton

HPARAMS = TINY["et"]
from tests.helpers.parity import assert_matches



@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
@pytest.mark.parametrize("radial", ["auto", "exact"])
def test_shipped_checkpoint_matches_torchmdnet(data_dir, periodic, radial):
    model = shipped_checkpoint_on_triton(data_dir, "et", periodic, radial)
    representation = model.representation_model
    assert isinstance(representation, TritonEquivariantTransformer)
    # "auto" on Triton (float32): tables for the neighbour embedding and every layer
    assert len(radial_tables(model)) == (0 if radial == "exact" else 1 + len(representation.attention_layers))


def _pair(**overrides):
    """The same random-weight model on both backends."""
    return reference_and_triton({**HPARAMS, **overrides})


def _inputs(kind: str, seed: int = 2):
    z, pos, batch, box = random_system(kind, seed=seed)
    return z, pos, batch, box


VARIANTS = {
    "both": {},
    "keys": {"distance_influence": "keys"},
    "values-vector-cutoff": {"distance_influence": "values", "vector_cutoff": True},
    "none": {"distance_influence": "none", "attn_activation": "tanh"},
    "vector-cutoff": {"vector_cutoff": True},
    "no-neighbor-embedding": {"neighbor_embedding": False, "activation": "ssp", "attn_activation": "sigmoid"},
    "gauss-lower": {"rbf_type": "gauss", "cutoff_lower": 0.6, "activation": "tanh", "attn_activation": "ssp"},
}
CASES = [(name, "open") for name in VARIANTS] + [("both", "periodic"), ("both", "batched"),
                                                  ("gauss-lower", "periodic"), ("values-vector-cutoff", "batched")]


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_matches_reference_path(name, kind):
    reference, triton = _pair(**VARIANTS[name])
    z, pos, batch, box = _inputs(kind)
    expected = reference(z, pos, batch, box=box)
    got = triton(z, pos, batch, box=box)
    assert_matches(*got, *expected, torch.float32)


@pytest.mark.parametrize("name,kind", [("both", "open"), ("both", "periodic"), ("gauss-lower", "batched"),
                                       ("values-vector-cutoff", "open")])
def test_tables_match_exact_reference_path(name, kind):
    """The table kernels (float32 tables as radial="auto" builds them) against the exact filters
    of the reference path in float64: both the tables' and the kernels' errors must fit."""
    reference, triton = _pair(**VARIANTS[name])
    tables = attach_radial_tables(triton.representation_model, torch.float32, "table")
    assert len(tables) == 1 + HPARAMS["num_layers"]
    reference = reference.double()
    z, pos, batch, box = _inputs(kind)
    expected = reference(z, pos.double(), batch, box=None if box is None else box.double())
    got = triton(z, pos, batch, box=box)
    assert_matches(*got, *expected, torch.float32)


def _finite_difference_stress(model, z, pos, batch, box, h=1e-4):
    """(dE / d strain) / volume [3, 3] by central differences of ``model`` (float64)."""
    volume = torch.linalg.det(box).abs()
    stress = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1.0, -1.0):
                strain = torch.zeros(3, 3, dtype=torch.float64)
                strain[a, b] = sign * h
                symmetric = 0.5 * (strain + strain.T)
                energy, _ = model.energy_terms(z, pos + pos @ symmetric, batch, box + box @ symmetric, None)
                energies.append(energy.sum())
            stress[a, b] = (energies[0] - energies[1]) / (2 * h) / volume
    return stress


@pytest.mark.parametrize("radial", ["exact", "table"])
def test_stress_matches_finite_differences(radial):
    """Stress of the Triton path (autograd through the kernels and the table's vectors, strained
    positions and triclinic cell) against central differences of the float64 reference energy."""
    reference, triton = _pair()
    if radial == "table":
        attach_radial_tables(triton.representation_model, torch.float32, "table")
    z, pos, batch, box = _inputs("periodic", seed=3)
    got = energy_derivatives(triton, z, pos, batch, box).stress[0].double()
    reference = reference.double()
    with torch.no_grad():
        expected = _finite_difference_stress(reference, z, pos.double(), batch, box.double())
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_box_gradient_matches_reference_path():
    """dE/dbox with fixed positions: the table's vectors carry the box's gradient as the reference's do."""
    reference, triton = _pair()
    z, pos, batch, box = _inputs("periodic", seed=3)
    grads = []
    for model in (reference, triton):
        cell = box.clone().requires_grad_()
        energy, _ = model(z, pos, batch, box=cell)
        grads.append(torch.autograd.grad(energy.sum(), cell)[0])
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("radial", ["exact", "table"])
def test_compiled_triton_path_matches_eager(radial):
    """torch.compile(fullgraph=True, backend="aot_eager") traces the registered ops (fake
    kernels, autograd registration): energy and forces equal to eager (plan made by an eager call)."""
    _, triton = _pair()
    if radial == "table":
        attach_radial_tables(triton.representation_model, torch.float32, "table")
    z, pos, batch, _ = _inputs("open")

    def energy(p):
        return triton.checked_energy_terms(z, p, batch, None, None, 1, None)[0]

    energy(pos)  # plans the neighbour search, makes the kernel constants
    assert_compiled_matches_eager(energy, pos)
