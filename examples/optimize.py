"""Geometry optimisation of a distorted molecule with BFGS.

    python examples/optimize.py [--molecule ethanol] [--rattle 0.15] [--fmax 0.05] [--steps 200]

Takes a GFN2-xTB MD frame (examples/data/xtb_molecules.extxyz), displaces every atom by a
random Gaussian vector (--rattle, Å, per component), relaxes it until the largest force is
below --fmax (eV/Å) and prints the energies (eV) and the largest force before and after.
"""

import argparse
from pathlib import Path

import numpy as np
from ase.io import read
from ase.optimize import BFGS

from fastnnp.calculator import FastNNPCalculator

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = ["ethanol", "benzene", "acetic_acid", "acetamide", "pyridine"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--molecule", default="ethanol", choices=MOLECULES)
parser.add_argument("--rattle", type=float, default=0.15, help="Å")
parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
parser.add_argument("--steps", type=int, default=200, help="most optimiser steps")
parser.add_argument("--device", default="auto")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

atoms = next(a for a in read(ROOT / "examples/data/xtb_molecules.extxyz", ":") if a.info["name"] == args.molecule)
atoms.rattle(stdev=args.rattle, seed=args.seed)
atoms.calc = FastNNPCalculator(args.model, device=args.device)


def max_force() -> float:
    """Largest atomic force, eV/Å."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


print(f"start: energy {atoms.get_potential_energy():.4f} eV, max force {max_force():.3f} eV/Å")
optimizer = BFGS(atoms, logfile="-")
converged = optimizer.run(fmax=args.fmax, steps=args.steps)
print(f"{'converged' if converged else 'not converged'} after {optimizer.nsteps} steps: "
      f"energy {atoms.get_potential_energy():.4f} eV, max force {max_force():.3f} eV/Å")
