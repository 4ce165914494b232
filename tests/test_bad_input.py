"""Bad input gets a clear error that names the problem."""


import numpy as np
import pytest
import torch

import fastnnp
from fastnnp import CheckpointError
from fastnnp.models.factory import build_model


@pytest.fixture(scope="module")
def model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")


@pytest.fixture(scope="module")
def water():
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return z, pos


@pytest.mark.parametrize("bad_z, message", [
    (torch.tensor([8, 1, 40]), r"atomic number 40 of atom 2 is not supported: this model handles 1\.\.31"),
    (torch.tensor([8, 0, 1]), r"atomic number 0 of atom 1 is not supported"),
    (torch.tensor([8, -3, 1]), r"atomic number -3 of atom 1"),
])
def test_unsupported_atomic_numbers(model, water, bad_z, message):
    with pytest.raises(ValueError, match=message):
        model(bad_z, water[1])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_positions(model, water, value):
    pos = water[1].clone()
    pos[1, 2] = value
    with pytest.raises(ValueError, match="position of atom 1 is not finite"):
        model(water[0], pos)


def test_wrong_shapes_and_dtypes(model, water):
    z, pos = water
    with pytest.raises(ValueError, match=r"pos must have shape \[n_atoms, 3\] = \[3, 3\], got \(3, 2\)"):
        model(z, pos[:, :2])
    with pytest.raises(ValueError, match=r"z must have shape \[n_atoms\]"):
        model(z[None], pos)
    with pytest.raises(TypeError, match="z must hold integer atomic numbers, got dtype torch.float32"):
        model(z.float(), pos)
    with pytest.raises(TypeError, match="pos has dtype torch.float64 but the model runs in torch.float32"):
        model(z, pos.double())
    with pytest.raises(ValueError, match=r"batch must have shape \[n_atoms\]"):
        model(z, pos, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no atoms: z is empty"):
        model(z[:0], pos[:0])
    with pytest.raises(ValueError, match=r"q \(total charge\) must have shape \[n_systems\] = \[1\]"):
        model(z, pos, q=torch.zeros(2))


def test_batch_must_be_sorted(model, water):
    z, pos = water
    with pytest.raises(ValueError, match="batch must be sorted"):
        model(torch.cat([z, z]), torch.cat([pos, pos + 10]), torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="batch skips a system index"):
        model(torch.cat([z, z]), torch.cat([pos, pos + 10]), torch.tensor([0, 0, 0, 2, 2, 2]))


def test_singular_and_malformed_boxes(model, water):
    z, pos = water
    flat = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [5.0, 5.0, 0]])
    with pytest.raises(ValueError, match="box of system 0 is singular"):
        model(z, pos, box=flat)
    with pytest.raises(ValueError, match="box of system 0 is singular"):
        model(z, pos, box=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"box must have shape \[3, 3\] or \[n_systems, 3, 3\]"):
        model(z, pos, box=torch.eye(2))
    with pytest.raises(ValueError, match="box is not finite"):
        model(z, pos, box=torch.eye(3) * float("nan"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nothing.ckpt"):
        fastnnp.load_model(tmp_path / "nothing.ckpt")


def test_corrupt_file(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        fastnnp.load_model(path)


def test_truncated_checkpoint(tmp_path, data_dir):
    data = (data_dir / "tensornet" / "model.ckpt").read_bytes()
    path = tmp_path / "half.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        fastnnp.load_model(path)


def test_foreign_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters'"):
        fastnnp.load_model(path)


class _Payload:
    """Stands for any object whose unpickling would run code."""


def test_arbitrary_unpickling_needs_opt_in(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Payload()}, path)
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling .it stores a tests.test_bad_input._Payload object.*trust_checkpoint=True"):
        fastnnp.load_model(path)


def test_weights_that_do_not_fit(tmp_path, data_dir):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["embedding_dimension"] = 32
    path = tmp_path / "mismatch.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit the architecture"):
        fastnnp.load_model(path)


@pytest.mark.parametrize("name, message", [
    ("foo", "unknown model 'foo'; supported: tensornet, equivariant-transformer, graph-network"),
    ("transformer", "model 'transformer' .the deprecated TorchMD-T transformer. is not supported"),
])
def test_unknown_model_name(data_dir, name, message):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    with pytest.raises(ValueError, match=message):
        build_model(dict(ckpt["hyper_parameters"], model=name))


def test_unsupported_precision_and_layout(data_dir):
    ckpt = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    with pytest.raises(ValueError, match="unsupported precision 16"):
        build_model(dict(ckpt["hyper_parameters"], precision=16))
    with pytest.raises(ValueError, match="unknown layout 'sideways'"):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", layout="sideways")
