"""Every TorchMD-Net ``load_model`` keyword is honoured with TorchMD-Net's meaning (numbers equal
TorchMD-Net's, the oracle) or refused with a message saying what to use instead; unknown keywords
name the closest known one; arguments are type- and device-checked up front."""

import re
import warnings

import numpy as np
import pytest
import torch

import fastnnp
from tests.helpers.parity import assert_matches, evaluate_reference

pytest.importorskip("torchmdnet")

from torchmdnet.models.model import load_model as tmn_load_model  # noqa: E402

from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet  # noqa: E402


def _torchmdnet(path, ref, **kwargs):
    """TorchMD-Net's (energy, forces) for ``path`` loaded with ``kwargs``, pure-torch path."""
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pure_torch(tmn_load_model(str(path), derivative=True, **kwargs)).eval()
        energy, forces = evaluate_reference(model, ref, "", torch.float32)
    return energy.detach(), forces.detach()


@pytest.fixture(scope="module")
def legacy_262(tmp_path_factory, data_dir):
    """A TorchMD-Net 2.6.2-style checkpoint: the legacy [N, F, 3, 3] layout with no marker
    (no ``check_errors``, a box buffer), as ``torchmd-train`` 2.6.2 wrote them."""
    raw = torch.load(data_dir / "tensornet" / "model_legacy_layout.ckpt", weights_only=True)
    raw["hyper_parameters"] = {k: v for k, v in raw["hyper_parameters"].items() if k != "check_errors"}
    assert "model.representation_model.distance.box" in raw["state_dict"]
    path = tmp_path_factory.mktemp("legacy") / "tensornet-2.6.2.ckpt"
    torch.save(raw, path)
    return path


def test_compatibility_load_matches_torchmdnet_on_a_2_6_2_checkpoint(legacy_262, data_dir):
    ref = np.load(data_dir / "tensornet" / "reference_legacy_layout.npz")
    oracle = _torchmdnet(legacy_262, ref, compatibility_load=True)
    assert_matches(*oracle, ref["energy_f32"], ref["forces_f32"], torch.float32)  # the oracle is the stored one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the explicit switch: no layout warning, no "unknown hyperparameter"
        model = fastnnp.load_model(legacy_262, compatibility_load=True)
    assert_matches(*evaluate_reference(model, ref, "", torch.float32), *oracle, torch.float32)
    # without the switch the unmarked checkpoint is read as current: wrong numbers, as in TorchMD-Net
    wrong = fastnnp.load_model(legacy_262)
    wrong_energy = evaluate_reference(wrong, ref, "", torch.float32)[0]
    assert np.abs(wrong_energy.detach().numpy() - ref["energy_f32"]).max() > 1e-2
    # compatibility_load=False on a marked checkpoint forces the current layout (TorchMD-Net's override)
    marked = data_dir / "tensornet" / "model_legacy_layout.ckpt"
    forced = fastnnp.load_model(marked, compatibility_load=False)
    forced_oracle = _torchmdnet(marked, ref, compatibility_load=False)
    assert_matches(*evaluate_reference(forced, ref, "", torch.float32), *forced_oracle, torch.float32)


def test_compatibility_load_refuses_a_conflicting_layout_and_non_booleans(legacy_262):
    with pytest.raises(ValueError, match=r"compatibility_load=True means layout='legacy', but layout='current'"):
        fastnnp.load_model(legacy_262, compatibility_load=True, layout="current")
    with pytest.raises(TypeError, match="compatibility_load must be True or False, got 'yes'"):
        fastnnp.load_model(legacy_262, compatibility_load="yes")


def test_honoured_keywords_equal_torchmdnet(data_dir):
    """Hints (no cap in fastnnp), check_errors=True, a precision override and args: TorchMD-Net's numbers."""
    path = data_dir / "tensornet" / "model.ckpt"
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    hints = dict(max_num_neighbors=128, check_errors=True, static_shapes=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fastnnp.load_model(path, **hints)
    assert_matches(*evaluate_reference(model, ref, "", torch.float32), ref["energy_f32"], ref["forces_f32"], torch.float32)
    # precision=64 builds a float64 model, as TorchMD-Net's create_model does
    model64 = fastnnp.load_model(path, precision=64)
    assert model64.dtype == torch.float64
    assert_matches(*evaluate_reference(model64, ref, "", torch.float64), ref["energy_f64"], ref["forces_f64"], torch.float64)
    with pytest.raises(ValueError, match=r"precision=64 and dtype=torch.float32 disagree"):
        fastnnp.load_model(path, precision=64, dtype=torch.float32)
    # args replaces the hyper-parameters (here: the checkpoint's own, so the same numbers)
    args = dict(torch.load(path, weights_only=True)["hyper_parameters"])
    with_args = fastnnp.load_model(path, args=args)
    assert_matches(*evaluate_reference(with_args, ref, "", torch.float32), ref["energy_f32"], ref["forces_f32"], torch.float32)
    with pytest.raises(TypeError, match="args must be a dict of hyper-parameters"):
        fastnnp.load_model(path, args=[1])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(embeding_dimension=64), ValueError, "unknown load_model keyword embeding_dimension=64.*did you mean 'embedding_dimension'"),
        (dict(compatability_load=True), ValueError, "did you mean 'compatibility_load'"),
        (dict(lr=1e-3), ValueError, r"the override\(s\) \['lr'\] are read by nothing in this tensornet model"),
        (dict(coulomb_cutoff=10.0), ValueError, r"\['coulomb_cutoff'\] are read by nothing"),
        (dict(box_vecs=[[10, 0, 0], [0, 10, 0], [0, 0, 10]]), ValueError, "box_vecs=.* is not supported: .*pass the cell as box="),
        (dict(check_errors=False), ValueError, "check_errors=False is not supported: fastnnp always checks"),
        (dict(remove_ref_energy=False), ValueError, "remove_ref_energy=False acts on delta-learned models only"),
        (dict(static_shapes=1), TypeError, "static_shapes must be True or False, got 1"),
        (dict(return_std=True), ValueError, "return_std=True needs an ensemble"),
        (dict(derivative="yes"), TypeError, "derivative must be True or False, got 'yes'"),
        (dict(dtype=torch.float16), ValueError, "dtype must be torch.float32 or torch.float64"),
        (dict(device=3.0), TypeError, "device must be a str or torch.device, got float"),
        (dict(device="gpu"), ValueError, "device='gpu' is not a device"),
    ],
)
def test_refused_keywords_say_what_to_use(data_dir, kwargs, error, message):
    with pytest.raises(error, match=message):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_says_so(data_dir):
    with pytest.raises(ValueError, match=re.escape("device='cuda' but no CUDA GPU is available")):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", device="cuda")


def test_path_must_be_a_path():
    with pytest.raises(TypeError, match="path must be a checkpoint path .* got int"):
        fastnnp.load_model(3)
    with pytest.raises(ValueError, match="path: an empty list of checkpoints"):
        fastnnp.load_model([])


def test_static_shapes_is_refused_where_padding_is_not_exact(data_dir):
    with pytest.raises(ValueError, match="static_shapes=True is not available: .*exact for tensornet only"):
        fastnnp.load_model(data_dir / "et" / "model.ckpt", static_shapes=True)
