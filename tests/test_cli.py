"""The ``fastnnp`` console script."""

import argparse
import re
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from fastnnp.cli import main


def test_info_describes_a_checkpoint(data_dir, capsys):
    assert main(["info", str(data_dir / "tensornet" / "model.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "tensornet (O(3))" in out and "64 x 2 layers, 32 expnorm rbf" in out and "cutoff        0.0 .. 4.5" in out
    tables = [line for line in out.splitlines() if line.startswith("radial table  ")]
    assert [line.split(":")[0].split()[-1] for line in tables] == ["tensor_embedding", "layers.0", "layers.1"]
    assert all(float(line.rsplit("bound ", 1)[1]) <= 1e-8 and "KiB" in line for line in tables)


@pytest.mark.parametrize("name, model, tables", [
    ("et", "equivariant-transformer", ["neighbor_embedding", "attention_layers.0", "attention_layers.1"]),
    ("gn", "graph-network", ["neighbor_embedding", "interactions.0.conv", "interactions.1.conv"]),
])
def test_info_lists_the_radial_tables_of_et_and_gn(data_dir, capsys, name, model, tables):
    assert main(["info", str(data_dir / name / "model.ckpt")]) == 0
    out = capsys.readouterr().out
    assert model in out
    lines = [line for line in out.splitlines() if line.startswith("radial table  ")]
    assert [line.split(":")[0].split()[-1] for line in lines] == tables
    assert all(float(line.rsplit("bound ", 1)[1]) <= 1e-8 and "KiB" in line for line in lines)


def test_energy_of_structures_in_a_file(data_dir, tmp_path, capsys):
    """Energies in eV with units printed, the file's stored energy beside the model's (--energy-unit and
    --length-unit go to FastNNPCalculator, whose conversions tests/test_calculator.py checks)."""
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    first = ref["batch"] == 0
    atoms = Atoms(numbers=ref["z"][first], positions=ref["pos"][first])
    stored = atoms.copy()
    stored.calc = SinglePointCalculator(stored, energy=-1.25, forces=np.zeros((len(atoms), 3)))
    path = tmp_path / "mol.xyz"
    ase.io.write(path, [atoms, stored], format="extxyz")
    checkpoint = str(data_dir / "tensornet" / "model.ckpt")
    assert main(["energy", checkpoint, str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    energy = float(lines[0].split("energy ")[1].split()[0])
    assert abs(energy - float(ref["energy_f32"][0, 0])) < 1e-4
    assert " eV\tmax |force| " in lines[0] and lines[0].endswith(" eV/Å") and "file energy" not in lines[0]
    assert f"\tfile energy -1.250000 eV\tdifference {energy + 1.25:+.6f} eV" in lines[1]


@pytest.fixture
def structure_files(tmp_path, data_dir):
    """Files a user might pass by mistake: empty, binary junk, an element the model lacks, two atoms
    at one position, a directory; checkpoints damaged on disk, diverged (NaN) or needing trust."""
    import torch

    from tests.checkpoint.test_integrity import largest_tensor_entry

    (tmp_path / "empty.xyz").write_text("")
    (tmp_path / "junk.xyz").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "folder").mkdir()
    ase.io.write(tmp_path / "uranium.xyz", Atoms("OHU", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    ase.io.write(tmp_path / "twice.xyz", Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [0.96, 0, 0]]))
    shipped = (data_dir / "tensornet" / "model.ckpt").read_bytes()
    start, _, _ = largest_tensor_entry(shipped)
    damaged = bytearray(shipped)
    damaged[start + 1000:start + 1016] = bytes(16)
    (tmp_path / "damaged.ckpt").write_bytes(damaged)
    checkpoint = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    checkpoint["state_dict"]["model.representation_model.layers.0.linears_scalar.0.weight"][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    checkpoint = torch.load(data_dir / "tensornet" / "model.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["extra"] = argparse.Namespace(note="any object beyond torch's allowlist")
    torch.save(checkpoint, tmp_path / "pickled.ckpt")
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["info", "{tmp}/nothing.ckpt"], r"fastnnp info: error: checkpoint not found: .*nothing.ckpt"),
    (["info", "{tmp}/junk.xyz"], r"fastnnp info: error: .*junk.xyz is not a PyTorch checkpoint .a torch.save zip "
                                 r"archive.: it is no format fastnnp knows"),
    (["energy", "{ckpt}", "{tmp}/missing.xyz"], r"fastnnp energy: error: structure file not found: .*missing.xyz"),
    (["energy", "{ckpt}", "{tmp}/empty.xyz"], r"fastnnp energy: error: cannot read frame 0 of .*empty.xyz as a "
                                              r"structure file: UnknownFileTypeError: Empty file"),
    (["energy", "{ckpt}", "{tmp}/junk.xyz"], r"fastnnp energy: error: cannot read frame 0 of .*junk.xyz as a structure file"),
    (["energy", "{ckpt}", "{tmp}/uranium.xyz"], r"fastnnp energy: error: .*uranium.xyz, frame 0: atomic number 92 of "
                                                r"atom 2 is not supported: this model handles 1\.\.31"),
    (["energy", "{ckpt}", "{tmp}/uranium.xyz", "--length-unit", "furlong"], "fastnnp energy: error: unknown length unit 'furlong'"),
    (["energy", "{ckpt}", "{tmp}/twice.xyz"], r"fastnnp energy: error: .*twice.xyz, frame 0: atoms 1 and 2 are 0 apart, closer "
                                              r"than the minimum distance 0.01"),
    (["energy", "{ckpt}", "{tmp}/folder"], r"fastnnp energy: error: structure file .*folder is a directory"),
    (["energy", "{ckpt}", "{tmp}/twice.xyz", "{tmp}/gone.xyz"], r"fastnnp energy: error: structure file not found: .*gone.xyz"),
    (["energy", "{tmp}/nan.ckpt", "{tmp}/twice.xyz"], r"fastnnp energy: error: .*nan.ckpt holds non-finite weights: 1 of "
                                                      r"the 2048 entries of 'model.representation_model.layers.0"),
    (["info", "{tmp}/folder"], r"fastnnp info: error: checkpoint path .*folder is a directory, not a checkpoint file"),
    (["info", "{tmp}/damaged.ckpt"], r"fastnnp info: error: .*damaged.ckpt is damaged: its entry 'model/data/\d+' fails "
                                     r"its CRC-32 checksum"),
    (["info", "{tmp}/pickled.ckpt"], r"fastnnp info: error: .*pickled.ckpt needs arbitrary unpickling .it stores "
                                     r"a argparse.Namespace object.*trust_checkpoint=True"),
    (["info", "{tmp}/empty.xyz"], r"fastnnp info: error: .*empty.xyz is empty .0 bytes."),
], ids=["missing-ckpt", "junk-ckpt", "missing-xyz", "empty-xyz", "junk-xyz", "element", "unit", "coincident", "folder-xyz",
        "second-missing", "nan-weights", "folder-ckpt", "crc", "pickle", "empty-ckpt"])
def test_user_errors_are_one_line_and_exit_2(structure_files, data_dir, capsys, argv, message):
    argv = [a.format(tmp=structure_files, ckpt=data_dir / "tensornet" / "model.ckpt") for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(message + ".*", lines[0]), captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_several_structure_files_a_shell_glob_passes(data_dir, tmp_path, capsys):
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    ase.io.write(tmp_path / "a.xyz", water)
    ase.io.write(tmp_path / "b.xyz", [water, water])
    assert main(["energy", str(data_dir / "tensornet" / "model.ckpt"), str(tmp_path / "a.xyz"), str(tmp_path / "b.xyz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{tmp_path}/a.xyz:0", f"{tmp_path}/b.xyz:0", f"{tmp_path}/b.xyz:1"]
    assert len({line.split("\t", 1)[1] for line in lines}) == 1


def test_a_call_too_large_for_memory_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    """The issue's 10 000 atoms in a 15 Å box: refused up front with the estimate (fake free memory)."""
    from fastnnp import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    side, per_axis = 15.0, 22
    grid = (np.stack(np.meshgrid(*[np.arange(per_axis)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * side / per_axis
    ase.io.write(tmp_path / "dense.xyz", Atoms(numbers=np.full(len(grid), 8), positions=grid, cell=np.eye(3) * side, pbc=True))
    assert main(["energy", str(data_dir / "tensornet" / "model.ckpt"), str(tmp_path / "dense.xyz")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"fastnnp energy: error: .*dense.xyz, frame 0: this call needs at least [\d.]+ GiB "
                                            r"but cpu has 1.0 GiB free: 10648 atoms .* Split the systems.*", lines[0]), lines


def test_warnings_are_one_line_each(tmp_path, capsys):
    """A TorchMD-Net checkpoint older than 2.5 without num_layers: the layout warning, then the error."""
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {"model": "tensornet"}}, tmp_path / "partial.ckpt")
    assert main(["info", str(tmp_path / "partial.ckpt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"fastnnp info: warning: .*partial.ckpt: assuming the legacy TensorNet weight layout .* because it "
                        r"has no neighbour-list box buffer .*", lines[0])
    assert re.fullmatch(r"fastnnp info: error: .*partial.ckpt is not a complete TorchMD-Net tensornet checkpoint: it lacks "
                        r"'num_layers' \(layout 'legacy'\)", lines[1])


def test_train_forwards_to_the_trainer_and_names_a_missing_config(capsys, tmp_path):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fastnnp train: error:") and "missing.yaml" in error


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "fastnnp.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "info" in result.stdout
