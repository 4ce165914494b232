"""Langevin molecular dynamics of a small molecule at 300 K, written to an ASE trajectory.

    python examples/md_langevin.py [--molecule ethanol] [--steps 2000] [--out langevin.traj]

Starts from a GFN2-xTB MD frame (examples/data/xtb_molecules.extxyz) with Maxwell-Boltzmann
velocities, runs Langevin dynamics (0.5 fs, friction 0.01 / fs) and every --every steps writes
a frame to --out and prints the temperature (K) and the potential energy (eV).
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from fastnnp.calculator import FastNNPCalculator

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = ["ethanol", "benzene", "acetic_acid", "acetamide", "pyridine"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--molecule", default="ethanol", choices=MOLECULES)
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--temperature", type=float, default=300.0, help="K")
parser.add_argument("--every", type=int, default=100, help="write and print every this many steps")
parser.add_argument("--out", default="langevin.traj", help="ASE trajectory file")
parser.add_argument("--device", default="auto")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

atoms = next(a for a in read(ROOT / "examples/data/xtb_molecules.extxyz", ":") if a.info["name"] == args.molecule)
atoms.calc = FastNNPCalculator(args.model, device=args.device)
atoms.set_constraint(FixCom())
rng = np.random.default_rng(args.seed)
MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
dynamics = Langevin(
    atoms, timestep=0.5 * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs, fixcm=False, rng=rng,
)


def report() -> None:
    """Print the temperature (K) and potential energy (eV) at this step."""
    print(f"step {dynamics.nsteps:6d}  T {atoms.get_temperature():6.1f} K  E_pot {atoms.get_potential_energy():9.4f} eV")


with Trajectory(args.out, "w", atoms) as trajectory:
    dynamics.attach(trajectory.write, interval=args.every)
    dynamics.attach(report, interval=args.every)
    dynamics.run(args.steps)
print(f"wrote {len(read(args.out, ':'))} frames to {args.out}")
