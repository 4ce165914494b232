"""The ``fastnnp`` console script."""

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms

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
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    first = ref["batch"] == 0
    atoms = Atoms(numbers=ref["z"][first], positions=ref["pos"][first])
    path = tmp_path / "mol.xyz"
    ase.io.write(path, [atoms, atoms], format="extxyz")
    assert main(["energy", str(data_dir / "tensornet" / "model.ckpt"), str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    energy = float(lines[0].split("energy ")[1].split()[0])
    assert abs(energy - float(ref["energy_f32"][0, 0])) < 1e-4


def test_train_forwards_to_the_trainer_and_names_a_missing_config(capsys, tmp_path):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fastnnp train: error:") and "missing.yaml" in error


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "fastnnp.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "info" in result.stdout
