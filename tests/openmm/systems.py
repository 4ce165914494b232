"""OpenMM topologies, systems and contexts of the calculator tests' ASE structures."""

import numpy as np
import openmm
import openmm.app
from ase import Atoms, units
from openmm import unit

KJ_PER_MOL_PER_EV = units.mol / units.kJ
EV_PER_KJ_MOL = 1.0 / KJ_PER_MOL_PER_EV
NM = 10.0  # Å per nm


def topology_of(*molecules: Atoms, cell=None) -> openmm.app.Topology:
    """One residue per molecule; box vectors from ``cell`` (rows, Å) when given."""
    topology = openmm.app.Topology()
    chain = topology.addChain()
    for k, molecule in enumerate(molecules):
        residue = topology.addResidue(f"M{k}", chain)
        for i, z in enumerate(molecule.numbers):
            element = openmm.app.Element.getByAtomicNumber(int(z))
            topology.addAtom(f"{element.symbol}{i}", element, residue)
    if cell is not None:
        topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in np.asarray(cell) / NM] * unit.nanometer)
    return topology


def context_of(system: openmm.System, positions_angstrom: np.ndarray, integrator=None) -> openmm.Context:
    integrator = integrator or openmm.VerletIntegrator(0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_angstrom / NM)
    return context


def energy_forces(context: openmm.Context, groups=-1) -> tuple[float, np.ndarray]:
    """Potential energy (eV) and forces (eV/Å) of the force ``groups`` (a set; -1: all)."""
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy * EV_PER_KJ_MOL, forces * EV_PER_KJ_MOL / NM
