"""fastnnp as an openmm-ml potential: registration, parity with FastNNPCalculator (float64,
OpenMM's Reference platform), mixed ML/MM systems, MD, bad input."""

import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import openmm
import pytest
import torch
from openmm import unit
from openmmml import MLPotential

from fastnnp import load_model
from fastnnp.calculator import FastNNPCalculator
from fastnnp.openmm import FastNNPPotentialImplFactory
from tests.helpers.calculator_systems import ET, GN, TENSORNET, periodic_box, reference_molecule
from tests.openmm.systems import KJ_PER_MOL_PER_EV, NM, context_of, energy_forces, topology_of

F64 = dict(dtype=torch.float64, device="cpu")
CHECKPOINTS = {"tensornet": TENSORNET, "et": ET, "gn": GN}


def assert_close(actual, expected, rtol=1e-5):
    """Relative 1e-5 of the largest entry (energies: of the value)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


def test_the_entry_point_is_found_and_fastnnp_imports_no_openmm():
    (point,) = [p for p in entry_points(group="openmmml.potentials") if p.name == "fastnnp"]
    assert point.value == "fastnnp.openmm:FastNNPPotentialImplFactory"
    assert isinstance(MLPotential._implFactories["fastnnp"], FastNNPPotentialImplFactory)
    code = "import sys, fastnnp, fastnnp.openmm; assert not {'openmm', 'openmmml'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_an_open_molecule_matches_the_calculator(name):
    atoms = reference_molecule(2)
    atoms.calc = FastNNPCalculator(CHECKPOINTS[name], **F64)
    system = MLPotential("fastnnp", modelPath=CHECKPOINTS[name], **F64).createSystem(topology_of(atoms))
    assert not system.usesPeriodicBoundaryConditions()
    energy, forces = energy_forces(context_of(system, atoms.positions))
    assert_close(energy, atoms.get_potential_energy())
    assert_close(forces, atoms.get_forces())


def test_a_periodic_box_with_a_total_charge_matches_the_calculator():
    """TensorNet (its ``1 + 0.1 q`` factors) on the 98-atom 11 Å box: the charge changes the
    energy, and positions outside the cell (OpenMM may wrap them) change nothing."""
    atoms = periodic_box()
    atoms.info["charge"] = 2.0
    atoms.calc = FastNNPCalculator(TENSORNET, **F64)
    potential = MLPotential("fastnnp", modelPath=TENSORNET, **F64)
    system = potential.createSystem(topology_of(atoms, cell=atoms.cell.array), charge=2)
    assert system.usesPeriodicBoundaryConditions()
    shifted = atoms.positions + atoms.cell.array[0] * 1.5  # outside the cell
    energy, forces = energy_forces(context_of(system, shifted))
    assert_close(energy, atoms.get_potential_energy())
    assert_close(forces, atoms.get_forces())
    neutral, _ = energy_forces(context_of(potential.createSystem(topology_of(atoms, cell=atoms.cell.array)), shifted))
    assert abs(neutral - energy) > 1e-3 * abs(energy)


def test_units_convert_between_openmm_and_the_model():
    """A model in kcal/mol and nm: OpenMM's kJ/mol and nm are 4.184 x the model's numbers."""
    atoms = reference_molecule(0)
    model = load_model(TENSORNET, **F64)
    z = torch.as_tensor(atoms.numbers)
    pos_nm = torch.as_tensor(atoms.positions / NM)
    energy, forces = model(z, pos_nm, torch.zeros_like(z))
    system = MLPotential("fastnnp", modelPath=TENSORNET, energy_unit="kcal/mol", length_unit="nm", **F64).createSystem(
        topology_of(atoms)
    )
    state = context_of(system, atoms.positions).getState(getEnergy=True, getForces=True)
    assert_close(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), 4.184 * energy.item())
    assert_close(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer), 4.184 * forces.numpy())


def test_an_ensemble_gives_the_member_mean():
    atoms = reference_molecule(1)
    atoms.calc = FastNNPCalculator([TENSORNET, ET], **F64)
    system = MLPotential("fastnnp", modelPath=[TENSORNET, ET], **F64).createSystem(topology_of(atoms))
    energy, forces = energy_forces(context_of(system, atoms.positions))
    assert_close(energy, atoms.get_potential_energy())
    assert_close(forces, atoms.get_forces())


def mm_system(topology, charges) -> openmm.System:
    """Lennard-Jones and Coulomb between all atoms (no cutoff): the conventional force field."""
    system = openmm.System()
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for atom, charge in zip(topology.atoms(), charges, strict=True):
        system.addParticle(atom.element.mass)
        nonbonded.addParticle(charge, 0.3, 0.5)
    system.addForce(nonbonded)
    return system


def test_a_mixed_system_computes_the_ml_atoms_as_the_ml_only_system():
    ml, other = reference_molecule(0), reference_molecule(1)
    other.positions += [8.0, 0.0, 0.0]
    topology = topology_of(ml, other)
    positions = np.concatenate([ml.positions, other.positions])
    charges = np.random.default_rng(0).uniform(-0.3, 0.3, len(positions))
    potential = MLPotential("fastnnp", modelPath=TENSORNET, **F64)
    mixed = potential.createMixedSystem(topology, mm_system(topology, charges), atoms=range(len(ml)), forceGroup=1)
    energy, forces = energy_forces(context_of(mixed, positions), groups={1})
    alone, alone_forces = energy_forces(context_of(potential.createSystem(topology_of(ml)), ml.positions))
    assert_close(energy, alone)
    assert_close(forces[: len(ml)], alone_forces)
    assert np.all(forces[len(ml):] == 0)
    # the MM part no longer has the ML atoms' mutual interactions, and still has the rest
    mm_energy, _ = energy_forces(context_of(mixed, positions), groups={0})
    full_mm, _ = energy_forces(context_of(mm_system(topology, charges), positions))
    assert mm_energy != pytest.approx(full_mm, rel=1e-6)


def test_langevin_stays_finite_and_verlet_conserves_energy():
    """50 LangevinMiddle steps at 300 K stay finite; 1 000 float64 Verlet steps of 0.1 fs drift
    less than the ASE calculator's bound (tests/test_calculator_md.py: 2e-5 eV/atom/ps)."""
    atoms = reference_molecule(0)
    potential = MLPotential("fastnnp", modelPath=TENSORNET, **F64)
    system = potential.createSystem(topology_of(atoms))
    langevin = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    langevin.setRandomNumberSeed(1)
    context = context_of(system, atoms.positions, langevin)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    langevin.step(50)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()
    assert np.isfinite(state.getPotentialEnergy()._value)

    verlet = openmm.VerletIntegrator(0.1 * unit.femtosecond)
    # without the CMMotionRemover, which would take the initial centre-of-mass motion's energy out
    context = context_of(potential.createSystem(topology_of(atoms), removeCMMotion=False), atoms.positions, verlet)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    steps, every = 1000, 20
    totals = []
    for _ in range(steps // every + 1):
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        verlet.step(every)
    totals = np.array(totals) / KJ_PER_MOL_PER_EV
    times_ps = np.arange(len(totals)) * every * 1e-4
    drift = abs(np.polyfit(times_ps, totals, 1)[0]) / len(atoms)
    print(f"OpenMM Verlet drift, {len(atoms)} atoms, {steps} x 0.1 fs, float64: {drift:.2e} eV/atom/ps")
    assert drift < 2e-5
    assert np.ptp(totals) > 0  # the energy is measured, not constant by construction


def test_a_serialized_system_loads_the_checkpoint_again():
    atoms = reference_molecule(3)
    system = MLPotential("fastnnp", modelPath=TENSORNET, **F64).createSystem(topology_of(atoms), charge=0)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert energy_forces(context_of(copy, atoms.positions))[0] == energy_forces(context_of(system, atoms.positions))[0]


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"needs modelPath="):
        MLPotential("fastnnp")
    with pytest.raises(TypeError, match="modelPath must be a path or a list of paths, got int"):
        MLPotential("fastnnp", modelPath=3)
    with pytest.raises(ValueError, match=r"skin must be a finite length >= 0 \(nm\), got -0.1"):
        MLPotential("fastnnp", modelPath=TENSORNET, skin=-0.1)
    potential = MLPotential("fastnnp", modelPath=TENSORNET, skin=0.05 * unit.nanometer, **F64)
    assert potential._impl.spec.skin == pytest.approx(0.05)
    atoms = reference_molecule(0)
    with pytest.raises(ValueError, match="the fastnnp potential does not take cutoff, device; it takes charge="):
        potential.createSystem(topology_of(atoms), device="cuda", cutoff=1.0)
    with pytest.raises(ValueError, match=r"charge must be a number \(the total charge in e\), got 'one'"):
        potential.createSystem(topology_of(atoms), charge="one")
    with pytest.raises(ValueError, match="charge must be finite, got nan"):
        potential.createSystem(topology_of(atoms), charge=float("nan"))
    heavy = atoms.copy()
    heavy.numbers[3] = 35
    with pytest.raises(ValueError, match=r"atom 3 \(Br3 of residue M0 1\) has atomic number 35; the model covers 1..31"):
        potential.createSystem(topology_of(heavy))
    topology = topology_of(atoms)
    next(iter(topology.atoms())).element = None
    with pytest.raises(ValueError, match=r"atom 0 \(N0 of residue M0 1\) has no element"):
        potential.createSystem(topology)
    periodic_mm = mm_system(topology_of(atoms), np.zeros(len(atoms)))
    periodic_mm.getForce(0).setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    with pytest.raises(ValueError, match="the System is periodic but the Topology has no box vectors"):
        potential.createMixedSystem(topology_of(atoms), periodic_mm, atoms=[0, 1])
