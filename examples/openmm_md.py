"""Langevin MD of a small molecule in OpenMM with fastnnp as the openmm-ml potential.

    python examples/openmm_md.py [--steps 200] [--model tests/data/tensornet/model.ckpt]

Prints the potential energy (kJ/mol) every --every steps.
"""

import argparse
from pathlib import Path

import openmm
import openmm.app
from ase.io import read
from openmm import unit
from openmmml import MLPotential

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--every", type=int, default=50)
args = parser.parse_args()

atoms = read(ROOT / "examples/data/xtb_molecules.extxyz", 0)
topology = openmm.app.Topology()
residue = topology.addResidue("MOL", topology.addChain())
for z in atoms.numbers:
    element = openmm.app.Element.getByAtomicNumber(int(z))
    topology.addAtom(element.symbol, element, residue)

potential = MLPotential("fastnnp", modelPath=str(args.model))  # eV and Å models; energy_unit=, length_unit= otherwise
system = potential.createSystem(topology, charge=0)
integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
simulation = openmm.app.Simulation(topology, system, integrator)
simulation.context.setPositions(atoms.positions * unit.angstrom)
simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
for step in range(0, args.steps + 1, args.every):
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    print(f"step {step}: E_pot {energy.value_in_unit(unit.kilojoule_per_mole):.3f} kJ/mol")
    if step < args.steps:
        simulation.step(args.every)
