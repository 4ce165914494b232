"""Stress tensor of a periodic box of molecules, and a short relaxation of positions and cell.

    python examples/periodic_stress.py [--steps 50] [--fmax 0.05]

The box (examples/data/molecular_box.extxyz) holds 8 molecules from the GFN2-xTB data in an
11.5 Å cubic cell. Prints the stress tensor in GPa (ASE's sign: the pressure is minus a third
of its trace), then relaxes atoms and cell together with FIRE on ase.filters.FrechetCellFilter.
The model was trained on isolated molecules only: its intermolecular forces are not physical.
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import FIRE

from fastnnp.calculator import FastNNPCalculator

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--structure", default=ROOT / "examples/data/molecular_box.extxyz", help="periodic cell")
parser.add_argument("--steps", type=int, default=50, help="most optimiser steps")
parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å (and the matching stress)")
parser.add_argument("--device", default="auto")
args = parser.parse_args()

atoms = read(args.structure)
atoms.calc = FastNNPCalculator(args.model, device=args.device)


def show(label: str) -> None:
    """Print energy (eV), volume (Å³), stress tensor (GPa) and pressure (GPa)."""
    stress = atoms.get_stress(voigt=False) / units.GPa
    print(f"{label}: {len(atoms)} atoms, energy {atoms.get_potential_energy():.4f} eV, "
          f"volume {atoms.get_volume():.1f} Å³, pressure {-np.trace(stress) / 3:+.3f} GPa")
    print("stress (GPa):\n" + np.array2string(stress, precision=4, suppress_small=True))


show("start")
optimizer = FIRE(FrechetCellFilter(atoms), logfile="-")
converged = optimizer.run(fmax=args.fmax, steps=args.steps)
show(f"{'converged' if converged else 'not converged'} after {optimizer.nsteps} steps")
