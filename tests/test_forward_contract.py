"""The model's forward has TorchMD-Net's signature ``(z, pos, batch, box, q, s, extra_args,
num_systems)``: the same meaning where the model uses an argument (numbers equal TorchMD-Net's)
and a clear error where a value is given that it cannot use; arguments are type- and
device-checked with messages naming them; calls work under ``torch.inference_mode()`` or say why."""

import numpy as np
import pytest
import torch

import fastnnp
from tests.helpers.parity import assert_matches, evaluate_reference

# extra_args["partial_charges"] (the Coulomb prior's) against TorchMD-Net: tests/test_variant_checkpoints.py


@pytest.fixture(scope="module")
def shipped(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt"), np.load(data_dir / "tensornet" / "reference.npz")


def _inputs(ref):
    return torch.as_tensor(ref["z"]), torch.as_tensor(ref["pos"], dtype=torch.float32), torch.as_tensor(ref["batch"])


def test_torchmdnet_positional_order_and_num_systems(shipped):
    model, ref = shipped
    z, pos, batch = _inputs(ref)
    n_systems = int(batch[-1]) + 1
    # TorchMD-Net's positional order: z, pos, batch, box, q, s, extra_args, num_systems
    energy, forces = model(z, pos, batch, None, None, None, None, n_systems)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)
    energy, forces = model(z, pos, batch=batch, q=None, s=None, num_systems=n_systems)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)
    with pytest.raises(ValueError, match=f"num_systems={n_systems + 1} but batch holds {n_systems} systems"):
        model(z, pos, batch, num_systems=n_systems + 1)
    with pytest.raises(TypeError, match="num_systems must be a positive int .* got 2.0"):
        model(z, pos, batch, num_systems=2.0)


def test_s_and_unread_extra_args_are_refused(shipped):
    model, ref = shipped
    z, pos, batch = _inputs(ref)
    with pytest.raises(ValueError, match="s \\(per-atom spins\\) is read by no fastnnp model.*pass s=None"):
        model(z, pos, batch, s=torch.zeros(len(z)))
    with pytest.raises(ValueError, match=r"extra_args \['spin'\] are read by nothing in this model; it reads no extra_args"):
        model(z, pos, batch, extra_args={"spin": torch.zeros(len(z))})
    with pytest.raises(TypeError, match="extra_args must be a dict of str -> Tensor, got list"):
        model(z, pos, batch, extra_args=[1])


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(z=np.array([6, 1])), TypeError, "z must be a torch.Tensor of integer atomic numbers .* got numpy.ndarray .*use torch.as_tensor"),
        (dict(pos=[[0.0, 0.0, 0.0]]), TypeError, "pos must be a torch.Tensor of positions .* got list"),
        (dict(q=1.0), TypeError, "q must be a torch.Tensor of total charges \\[n_systems\\], got float 1.0"),
        (dict(box=np.eye(3)), TypeError, "box must be a torch.Tensor of cell rows"),
        (dict(batch="0"), TypeError, "batch must be a torch.Tensor of integer system indices"),
        (dict(q=torch.tensor([True])), TypeError, "q \\(total charge\\) must be a real number per system, got dtype torch.bool"),
        (dict(pos=torch.zeros(3, 3, dtype=torch.float32, device="meta")), ValueError, "pos is on meta but the model is on cpu: move the inputs with .to\\('cpu'\\)"),
    ],
)
def test_argument_types_and_devices_are_named(shipped, change, error, message):
    model, _ = shipped
    args = dict(z=torch.tensor([6, 1, 1]), pos=torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.1, 0.0]]),
                batch=None, box=None, q=None)
    args.update(change)
    with pytest.raises(error, match=message):
        model(**args)


def test_inference_mode(shipped, data_dir):
    """Forces need autograd: under inference_mode a clear error; energies work; no_grad works;
    inference tensors made under inference_mode are accepted outside it."""
    model, ref = shipped
    z, pos, batch = _inputs(ref)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="torch.inference_mode\\(\\) switches autograd off: call the model under torch.no_grad"):
            model(z, pos, batch)
        z_inf, pos_inf, batch_inf = z.clone(), pos.clone(), batch.clone()
    with torch.no_grad():
        energy, forces = model(z, pos, batch)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)
    energy, forces = model(z_inf, pos_inf, batch_inf)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)
    energy_only = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", derivative=False)
    with torch.inference_mode():
        energy, forces = evaluate_reference(energy_only, ref, "", torch.float32)
    assert forces is None
    np.testing.assert_allclose(energy.numpy(), ref["energy_f32"], rtol=1e-5, atol=1e-5)
