"""The scripts in examples/ run end to end (tiny settings, one subprocess each) and print what they promise."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from ase.io import read

import fastnnp

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?"


def run_example(name: str, *args: str, cwd: Path = ROOT) -> str:
    """Run ``examples/<name>`` with ``args`` on one CPU thread; returns its stdout, fails on a non-zero exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def numbers_after(label: str, text: str) -> list[float]:
    """Every number printed right after ``label``."""
    return [float(x) for x in re.findall(re.escape(label) + r"\s*(" + NUMBER + ")", text)]


def test_energy_and_forces():
    out = run_example("energy_and_forces.py")
    assert "C2H6O: energy" in out and re.search(r"water box of \d+ atoms: energy " + NUMBER, out)


def test_md_nve_prints_the_total_energy_and_its_drift():
    out = run_example("md_nve.py", "--steps", "20", "--every", "5")
    totals = numbers_after("E_total", out)
    assert len(totals) == 5  # steps 0, 5, 10, 15, 20
    assert np.ptp(totals) < 5e-3  # eV: 20 steps of 0.25 fs in float64 conserve energy
    (drift,) = numbers_after("drift", out)
    assert np.isfinite(drift) and "eV/atom/ps" in out


def test_md_langevin_writes_a_trajectory(tmp_path):
    traj = tmp_path / "run.traj"
    out = run_example("md_langevin.py", "--steps", "10", "--every", "5", "--out", str(traj), cwd=tmp_path)
    temperatures = numbers_after(" T", out)
    assert len(temperatures) == 3 and all(0 < t < 3000 for t in temperatures)
    frames = read(traj, ":")
    assert len(frames) == 3 and f"wrote 3 frames to {traj}" in out
    assert not np.allclose(frames[0].positions, frames[-1].positions)


def test_optimize_converges():
    out = run_example("optimize.py")
    assert re.search(r"converged after \d+ steps: energy " + NUMBER + " eV", out)
    assert "not converged" not in out
    energies = numbers_after("energy", out)
    assert energies[-1] < energies[0]
    assert numbers_after("max force", out)[-1] < 0.05


def test_periodic_stress_prints_the_stress_and_relaxes_the_cell():
    out = run_example("periodic_stress.py", "--steps", "3")
    assert out.count("stress (GPa):") == 2
    assert len(numbers_after("pressure", out)) == 2
    assert re.search(r"after 3 steps: 81 atoms", out)



def test_openmm_md_prints_finite_energies():
    out = run_example("openmm_md.py", "--steps", "10", "--every", "5")
    energies = numbers_after("E_pot", out)
    assert len(energies) == 3 and np.all(np.isfinite(energies)) and "kJ/mol" in out


def test_torchsim_md_runs_every_molecule():
    out = run_example("torchsim_md.py", "--steps", "5")
    energies = numbers_after("E_pot", out)
    n_molecules = len(read(ROOT / "examples/data/xtb_molecules.extxyz", ":"))
    assert len(energies) == n_molecules and np.all(np.isfinite(energies))


def test_train_tensornet_config_trains_and_writes_a_loadable_checkpoint(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "fastnnp.cli", "train", str(ROOT / "examples" / "train_tensornet.yaml"),
         "--log_dir", str(tmp_path / "run"), "--num_epochs", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"writing to {tmp_path / 'run'}" in proc.stdout + proc.stderr
    assert "test set (best checkpoint" in proc.stdout
    model = fastnnp.load_model(tmp_path / "run" / "best.ckpt")
    frame = read(ROOT / "examples/data/xtb_molecules.extxyz", 0)
    energy, forces = model(torch.as_tensor(frame.numbers), torch.as_tensor(frame.positions, dtype=torch.float32))
    assert energy.shape == (1, 1) and forces.shape == (len(frame), 3) and bool(torch.isfinite(forces).all())
