"""Molecular dynamics through FastNNPCalculator: energy conservation and the Verlet skin."""

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from fastnnp.calculator import FastNNPCalculator
from fastnnp.models.common.radial_table import radial_tables
from fastnnp.neighbors.reuse import neighbor_builds
from tests.helpers.calculator_systems import TENSORNET, reference_molecule, triclinic_cell

F64 = dict(dtype=torch.float64, device="cpu")
# 0.1 ps of NVE at 0.1 fs: drifts of 2.0e-6 eV/atom/ps (table and exact), as over 0.4 ps (2.2e-6)
NVE_STEPS = 1000


def total_energy_drift(atoms, steps: int, timestep_fs: float) -> float:
    """Slope of a straight-line fit of the total energy over time, in eV per atom per ps."""
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = [atoms.get_total_energy()]
    for _ in range(steps):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
    times_ps = np.arange(steps + 1) * timestep_fs / 1000
    slope = np.polyfit(times_ps, energies, 1)[0]
    return abs(slope) / len(atoms)


def thermalised(atoms, temperature_k: float = 300.0, seed: int = 7):
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


@pytest.mark.parametrize("radial", ["exact", "table"])
def test_nve_energy_drift_of_a_molecule_is_small(radial):
    """Also with radial tables: forces are the exact derivative of the tabulated energy."""
    atoms = thermalised(reference_molecule(0))
    atoms.calc = FastNNPCalculator(TENSORNET, radial=radial, **F64)
    assert (radial_tables(atoms.calc.model) != []) == (radial == "table")
    drift = total_energy_drift(atoms, steps=NVE_STEPS, timestep_fs=0.1)
    print(f"NVE drift, {len(atoms)} atoms, {NVE_STEPS} x 0.1 fs, float64, radial={radial}: {drift:.2e} eV/atom/ps")
    assert drift < 2e-5


@pytest.mark.parametrize("make_atoms", [reference_molecule, triclinic_cell], ids=["molecule", "triclinic"])
def test_skin_gives_the_trajectory_of_rebuilding_every_step(make_atoms):
    trajectories = []
    for skin in (0.0, 0.5):
        atoms = thermalised(make_atoms(1), temperature_k=600.0)
        atoms.calc = FastNNPCalculator(TENSORNET, skin=skin, **F64)
        dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        positions = []
        for _ in range(100):
            dynamics.run(1)
            positions.append(atoms.positions.copy())
        builds = neighbor_builds(atoms.calc.model)
        trajectories.append(np.stack(positions))
        if skin == 0:
            assert builds == 0  # skin 0 searches afresh every call, without a cache
        else:
            assert 1 < builds < 50
    np.testing.assert_array_equal(trajectories[0], trajectories[1])
