"""TensorNet end to end on the Triton kernels (CPU interpreter) against the reference path and
TorchMD-Net's stored outputs, with the exact filters (MLP kernels) and with radial tables (table
kernels), and the backend's refusals."""

import pytest
import torch

import fastnnp
from fastnnp.models.common.radial_table import attach_radial_tables, radial_tables
from fastnnp.models.tensornet.triton import TritonTensorNet
from tests.helpers.kernel_cases import random_system
from tests.helpers.backends import TINY, reference_and_triton, shipped_checkpoint_on_triton

HPARAMS = TINY["tensornet"]
from tests.helpers.parity import assert_matches



@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
@pytest.mark.parametrize("radial", ["auto", "exact"])
def test_shipped_checkpoint_matches_torchmdnet(data_dir, periodic, radial):
    model = shipped_checkpoint_on_triton(data_dir, "tensornet", periodic, radial)
    assert isinstance(model.representation_model, TritonTensorNet)
    # "auto" on Triton (float32): tables for the embedding and every layer, so the table kernels
    assert len(radial_tables(model)) == (0 if radial == "exact" else 1 + len(model.representation_model.layers))


def _pair(**overrides):
    """The same random-weight model on both backends."""
    return reference_and_triton({**HPARAMS, **overrides})


@pytest.mark.parametrize("kind", ["open", "periodic", "batched"])
@pytest.mark.parametrize("overrides", [
    {}, {"equivariance_invariance_group": "SO(3)"}, {"cutoff_lower": 0.6, "rbf_type": "gauss", "activation": "ssp"},
], ids=["O3", "SO3", "lower-gauss-ssp"])
def test_matches_reference_path(kind, overrides):
    reference, triton = _pair(**overrides)
    z, pos, batch, box = random_system(kind, seed=2)
    n_systems = int(batch.max()) + 1
    q = torch.arange(n_systems, dtype=torch.float32) - 1
    expected = reference(z, pos, batch, box=box, q=q)
    got = triton(z, pos, batch, box=box, q=q)
    assert_matches(*got, *expected, torch.float32)


@pytest.mark.parametrize("kind", ["open", "periodic", "batched"])
@pytest.mark.parametrize("overrides", [
    {}, {"cutoff_lower": 0.6, "rbf_type": "gauss", "activation": "ssp"},
], ids=["O3-expnorm", "lower-gauss-ssp"])
def test_tables_match_exact_reference_path(kind, overrides):
    """The table kernels (float32 tables as radial="auto" builds them) against the exact filters
    of the reference path in float64: both the tables' and the kernels' errors must fit."""
    reference, triton = _pair(**overrides)
    tables = attach_radial_tables(triton.representation_model, torch.float32, "table")
    assert len(tables) == 1 + HPARAMS["num_layers"]
    reference = reference.double()
    z, pos, batch, box = random_system(kind, seed=2)
    n_systems = int(batch.max()) + 1
    q = torch.arange(n_systems, dtype=torch.float32) - 1
    expected = reference(z, pos.double(), batch, box=None if box is None else box.double(), q=q.double())
    got = triton(z, pos, batch, box=box, q=q)
    assert_matches(*got, *expected, torch.float32)


def test_box_gradient_matches_reference_path():
    """Stress needs dE/dbox: the table's vectors carry the box's gradient as the reference's do."""
    reference, triton = _pair()
    z, pos, batch, box = random_system("periodic", seed=3)
    grads = []
    for model in (reference, triton):
        cell = box.clone().requires_grad_()
        energy, _ = model(z, pos, batch, box=cell)
        grads.append(torch.autograd.grad(energy.sum(), cell)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_auto_backend_is_reference_on_cpu(data_dir):
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")
    assert type(model.representation_model).__name__ == "TensorNet"


@pytest.mark.parametrize("name,kwargs,error,match", [
    ("tensornet", {"dtype": torch.float64}, ValueError, "float32 only.*dtype=torch.float32"),
    ("tensornet", {"backend": "cuda"}, ValueError, "unknown backend 'cuda'"),
])
def test_load_refusals(data_dir, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastnnp.load_model(data_dir / name / "model.ckpt", **{"backend": "triton", **kwargs})


def test_tf32_with_every_filter_tabulated_is_refused():
    """precision="tf32" only changes the radial-MLP kernels; with tables everywhere it would do nothing."""
    _, triton = _pair()
    triton.representation_model.precision = "tf32"
    z, pos, batch, _ = random_system("open")
    triton(z, pos, batch)  # exact filters: tf32 applies
    attach_radial_tables(triton.representation_model, torch.float32, "table")
    with pytest.raises(ValueError, match="precision='tf32'.*radial table"):
        triton(z, pos, batch)
