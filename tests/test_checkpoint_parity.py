"""fastnnp reproduces TorchMD-Net 3.1 on the checkpoints torchmd-train wrote (tests/data)."""

import warnings

import numpy as np
import pytest
import torch

import fastnnp
from tests.helpers.parity import assert_matches, evaluate_reference

MODELS = ["tensornet", "et", "gn"]
DTYPES = {"f32": torch.float32, "f64": torch.float64}


@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_matches_torchmdnet(data_dir, name, precision, periodic):
    dtype = DTYPES[precision]
    ref = np.load(data_dir / name / "reference.npz")
    model = fastnnp.load_model(data_dir / name / "model.ckpt", dtype=dtype)
    prefix = "pbc_" if periodic else ""
    energy, forces = evaluate_reference(model, ref, prefix, dtype)
    assert energy.dtype == dtype and forces.dtype == dtype
    assert_matches(energy, forces, ref[f"{prefix}energy_{precision}"], ref[f"{prefix}forces_{precision}"], dtype)


def test_legacy_layout_is_detected_with_a_warning(data_dir):
    ref = np.load(data_dir / "tensornet" / "reference_legacy_layout.npz")
    with pytest.warns(UserWarning, match="legacy TensorNet weight layout.*check_errors"):
        model = fastnnp.load_model(data_dir / "tensornet" / "model_legacy_layout.ckpt")
    energy, forces = evaluate_reference(model, ref, "", torch.float32)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)


def test_explicit_layout_overrides_detection(data_dir):
    path = data_dir / "tensornet" / "model_legacy_layout.ckpt"
    ref = np.load(data_dir / "tensornet" / "reference_legacy_layout.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legacy = fastnnp.load_model(path, layout="legacy")
        wrong = fastnnp.load_model(path, layout="current")
    energy, forces = evaluate_reference(legacy, ref, "", torch.float32)
    assert_matches(energy, forces, ref["energy_f32"], ref["forces_f32"], torch.float32)
    wrong_energy, _ = evaluate_reference(wrong, ref, "", torch.float32)
    assert np.abs(wrong_energy.detach().numpy() - ref["energy_f32"]).max() > 1e-2


def test_current_layout_loads_without_warning(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")


def test_energy_only_mode_returns_no_forces(data_dir):
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", derivative=False)
    energy, forces = evaluate_reference(model, ref, "", torch.float32)
    assert forces is None
    np.testing.assert_allclose(energy.detach().numpy(), ref["energy_f32"], atol=1e-5)
