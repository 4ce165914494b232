"""Damaged, foreign and unsafe checkpoint files are refused with a CheckpointError that says why;
an intact one reads exactly. The fuzz test reads a few hundred seeded random, truncated and
bit-flipped variants of a tiny checkpoint through the checkpoint layer alone."""

import io
import struct
import zipfile

import numpy as np
import pytest
import torch

from fastnnp.checkpoint import CheckpointError, lightning_state_from_model, read_checkpoint
from fastnnp.checkpoint.archive import ZIP_MAGIC
from fastnnp.models.factory import build_model
from tests.helpers import DATA


def tiny_checkpoint() -> dict:
    """A TorchMD-Net checkpoint of an F=8, one-layer TensorNet (the shipped one's other settings)."""
    stored = torch.load(DATA / "tensornet" / "model.ckpt", map_location="cpu", weights_only=True)
    hparams = dict(stored["hyper_parameters"], embedding_dimension=8, num_layers=1, num_rbf=8)
    model = build_model(hparams)
    return {"epoch": 0, "state_dict": lightning_state_from_model(model.state_dict(), hparams), "hyper_parameters": hparams}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(path, bytes, what read_checkpoint returns) of the tiny checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(tiny_checkpoint(), path)
    return path, path.read_bytes(), read_checkpoint(path)


def same_checkpoint(a, b) -> bool:
    """Bit-identical hyper-parameters, state dict (names, dtypes, values) and default box."""
    if a.hparams != b.hparams or list(a.state_dict) != list(b.state_dict):
        return False
    if (a.default_box is None) != (b.default_box is None) or (a.default_box is not None and not torch.equal(a.default_box, b.default_box)):
        return False
    return all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
               for x, y in zip(a.state_dict.values(), b.state_dict.values(), strict=True))


def entry_span(data: bytes, suffix: str) -> tuple[int, int, str]:
    """(start, end, name) of the stored bytes of the zip entry whose name ends with ``suffix``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    header = info.header_offset  # the local header: 30 bytes, then the name and the extra field
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
    start = header + 30 + name_length + extra_length
    return start, start + info.compress_size, info.filename


def largest_tensor_entry(data: bytes) -> tuple[int, int, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    return entry_span(data, info.filename)


def test_flipped_bytes_in_the_weights_are_refused_naming_the_entry(original, tmp_path):
    path, data, _ = original
    start, end, name = largest_tensor_entry(data)
    damaged = bytearray(data)
    damaged[start + 8:start + 24] = bytes(b ^ 0xFF for b in damaged[start + 8:start + 24])  # 16 bytes, as in the issue
    (tmp_path / "flipped.ckpt").write_bytes(damaged)
    with pytest.raises(CheckpointError, match=rf"flipped.ckpt is damaged: its entry '{name}' fails its CRC-32 checksum"):
        read_checkpoint(tmp_path / "flipped.ckpt")


def test_damaged_shipped_checkpoint_is_refused_by_load_model(tmp_path):
    """The issue's case on the shipped model: before, E changed from -0.665 to -0.836 eV without a word."""
    import fastnnp

    data = bytearray((DATA / "tensornet" / "model.ckpt").read_bytes())
    start, _, name = largest_tensor_entry(bytes(data))
    data[start + 1000:start + 1016] = bytes(16)
    (tmp_path / "model.ckpt").write_bytes(data)
    with pytest.raises(CheckpointError, match=f"its entry '{name}' fails its CRC-32 checksum"):
        fastnnp.load_model(tmp_path / "model.ckpt")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value):
    ckpt = tiny_checkpoint()
    key = "model.representation_model.layers.0.linears_scalar.0.weight"
    ckpt["state_dict"][key][0, :3] = value
    torch.save(ckpt, tmp_path / "diverged.ckpt")
    with pytest.raises(CheckpointError, match=rf"diverged.ckpt holds non-finite weights: 3 of the \d+ entries of '{key}' "
                                              "are NaN or infinite"):
        read_checkpoint(tmp_path / "diverged.ckpt")


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"model: tensornet\nembedding_dimension: 64\n", r"is not a PyTorch checkpoint .a torch.save zip archive.: it is a "
                                                     r"text file .starting 'model: tensornet\\nembedding"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", "it is a Git LFS pointer"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "it is an HDF5 file"),
    (bytes(range(256)) * 4, "it is no format fastnnp knows .first bytes 00 01 02 03"),
])
def test_foreign_files_say_what_they_are(tmp_path, content, message):
    (tmp_path / "x.ckpt").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(tmp_path / "x.ckpt")


def test_legacy_and_foreign_archives(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="it is a legacy torch.save file .torch < 1.6, no checksums."):
        read_checkpoint(tmp_path / "legacy.pt")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"is a zip archive but not a PyTorch checkpoint: it has no data.pkl .it holds a.npy."):
        read_checkpoint(tmp_path / "arrays.npz")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters', found list"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"state_dict": {"w": [1.0]}, "hyper_parameters": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="its state_dict entry 'w' is a list, not a tensor"):
        read_checkpoint(tmp_path / "odd.pt")


def test_truncated_archive_says_so(original, tmp_path):
    _, data, _ = original
    (tmp_path / "cut.ckpt").write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError, match=rf"cut.ckpt is truncated or damaged: its zip directory cannot be read .*"
                                              rf"\({len(data) // 3} bytes\)"):
        read_checkpoint(tmp_path / "cut.ckpt")


class _Exploit:
    def __reduce__(self):
        import os

        return os.system, ("true",)


class _Custom:
    pass


@pytest.mark.parametrize("payload, global_name", [
    (_Exploit(), "posix.system"),  # reported as 'corrupt' before: torch 2.13 words this refusal differently
    (_Custom(), "tests.checkpoint.test_integrity._Custom"),
])
def test_pickles_needing_trust_name_what_they_store(tmp_path, payload, global_name):
    ckpt = tiny_checkpoint()
    ckpt["hyper_parameters"]["extra"] = payload
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match=rf"needs arbitrary unpickling .it stores a {global_name} object.*"
                                              "trust_checkpoint=True"):
        read_checkpoint(tmp_path / "pickled.ckpt")


def test_fuzzed_files_are_refused_or_read_exactly(original, tmp_path):
    """Seeded: 100 random files (half starting like a zip), 100 truncations, 200 damaged copies
    (bytes or bits flipped anywhere, in the zip directory, or in the pickle). Each must raise
    CheckpointError or read bit-identical to the original; nothing else may escape."""
    _, data, expected = original
    rng = np.random.default_rng(20261203)
    pickle_start, pickle_end, _ = entry_span(data, "/data.pkl")
    regions = [(0, len(data)), (data.rfind(b"PK\x01\x02") - 2000, len(data)), (0, 200), (pickle_start, pickle_end)]
    cases = []
    for k in range(100):
        noise = rng.bytes(int(rng.integers(0, 3000)))
        cases.append((f"random {k}", ZIP_MAGIC + noise if k % 2 else noise))
    for k in range(100):
        cases.append((f"truncated {k}", data[:int(rng.integers(0, len(data)))]))
    for k in range(200):
        low, high = regions[k % len(regions)]
        damaged = bytearray(data)
        for position in rng.integers(max(low, 0), high, size=int(rng.integers(1, 17))):
            damaged[position] ^= 1 << int(rng.integers(0, 8)) if k % 2 else int(rng.integers(1, 256))
        cases.append((f"flipped {k}", bytes(damaged)))
    path, outcomes = tmp_path / "fuzz.ckpt", {"refused": 0, "identical": 0}
    for name, content in cases:
        path.write_bytes(content)
        try:
            result = read_checkpoint(path)
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        assert same_checkpoint(result, expected), f"{name} read without error but differs from the original"
        outcomes["identical"] += 1
    assert outcomes["refused"] >= 380, outcomes  # nearly every damaged file is caught (a flip in padding is harmless)


def test_incomplete_checkpoints_say_what_they_lack(tmp_path):
    """A legacy-layout TensorNet (no box buffer) whose conversion needs what the file lacks."""
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "tensornet"}}, tmp_path / "bare.ckpt")
    with pytest.warns(UserWarning, match="assuming the legacy TensorNet weight layout"), \
            pytest.raises(CheckpointError, match=r"bare.ckpt is not a complete TorchMD-Net tensornet checkpoint: it lacks "
                                                 r"'num_layers' \(layout 'legacy'\)"):
        read_checkpoint(tmp_path / "bare.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "tensornet", "num_layers": 1}}, tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="it lacks 'representation_model.tensor_embedding.linears_scalar.1.weight'"):
        read_checkpoint(tmp_path / "empty.ckpt", layout="legacy")


def test_a_directory_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"checkpoint path {tmp_path} is a directory, not a checkpoint file"):
        read_checkpoint(tmp_path)
