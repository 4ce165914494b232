"""TensorNet end to end on the Triton kernels (CPU interpreter) against the reference path and
TorchMD-Net's stored outputs, with the exact filters (MLP kernels) and with radial tables (table
kernels), and the backend's refusals."""

import numpy as np
import pytest
import torch

import fastnnp
from fastnnp.models.common.radial_table import attach_radial_tables, radial_tables
from fastnnp.models.factory import build_model
from fastnnp.models.tensornet.triton import TritonTensorNet
from tests.helpers.kernel_cases import random_system
from tests.helpers.parity import assert_matches, evaluate_reference

HPARAMS = dict(
    model="tensornet", embedding_dimension=16, num_layers=2, num_rbf=10, rbf_type="expnorm", trainable_rbf=False,
    activation="silu", cutoff_lower=0.0, cutoff_upper=4.0, max_z=10, equivariance_invariance_group="O(3)",
    output_model="Scalar", reduce_op="add", prior_model=None, precision=32,
)


@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
@pytest.mark.parametrize("radial", ["auto", "exact"])
def test_shipped_checkpoint_matches_torchmdnet(data_dir, periodic, radial):
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="triton", radial=radial)
    assert isinstance(model.representation_model, TritonTensorNet)
    # "auto" on Triton (float32): tables for the embedding and every layer, so the table kernels
    assert len(radial_tables(model)) == (0 if radial == "exact" else 1 + len(model.representation_model.layers))
    prefix = "pbc_" if periodic else ""
    energy, forces = evaluate_reference(model, ref, prefix, torch.float32)
    assert_matches(energy, forces, ref[f"{prefix}energy_f32"], ref[f"{prefix}forces_f32"], torch.float32)


def _pair(**overrides):
    """The same random-weight model on both backends."""
    hparams = {**HPARAMS, **overrides}
    torch.manual_seed(5)
    reference = build_model(hparams)
    for p in reference.parameters():
        p.data += 0.1 * torch.randn_like(p)
    triton = build_model(hparams, backend="triton")
    triton.load_state_dict(reference.state_dict())
    return reference.eval(), triton.eval().requires_grad_(False)


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
    ("et", {}, ValueError, "TensorNet only"),
    ("tensornet", {"backend": "cuda"}, ValueError, "unknown backend 'cuda'"),
])
def test_load_refusals(data_dir, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastnnp.load_model(data_dir / name / "model.ckpt", **{"backend": "triton", **kwargs})


def test_cpu_without_interpreter_is_refused(data_dir, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="triton")


def test_trainable_parameters_are_refused():
    _, triton = _pair()
    triton.requires_grad_(True)
    z, pos, batch, _ = random_system("open")
    with pytest.raises(RuntimeError, match="parameters as constants"):
        triton(z, pos, batch)


def test_activation_without_kernel_is_refused():
    with pytest.raises(ValueError, match="activation Mish has no Triton kernel"):
        build_model({**HPARAMS, "activation": "mish"}, backend="triton")


def test_float64_inputs_are_refused():
    _, triton = _pair()
    z, pos, batch, _ = random_system("open")
    with pytest.raises(ValueError, match="float32 only"):
        triton.representation_model(z, pos.double(), batch)


def test_tf32_with_every_filter_tabulated_is_refused():
    """precision="tf32" only changes the radial-MLP kernels; with tables everywhere it would do nothing."""
    _, triton = _pair()
    triton.representation_model.precision = "tf32"
    z, pos, batch, _ = random_system("open")
    triton(z, pos, batch)  # exact filters: tf32 applies
    attach_radial_tables(triton.representation_model, torch.float32, "table")
    with pytest.raises(ValueError, match="precision='tf32'.*radial table"):
        triton(z, pos, batch)


def test_kernel_constants_follow_new_weights():
    """The kernels' cached view of the parameters is rebuilt after load_state_dict (and after an
    in-place edit under no_grad): the Triton model keeps matching the reference with new weights."""
    reference, triton = _pair()
    z, pos, batch, box = random_system("open", seed=2)
    triton(z, pos, batch)  # constants made for the first weights
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(1.1)
    triton.load_state_dict(reference.state_dict())
    assert_matches(*triton(z, pos, batch), *reference(z, pos, batch), torch.float32)
    with torch.no_grad():
        for model in (reference, triton):
            model.representation_model.layers[0].linears_tensor[4].weight.mul_(-1.0)
    assert_matches(*triton(z, pos, batch), *reference(z, pos, batch), torch.float32)
