"""NVE molecular dynamics of a small molecule, and how well it conserves the total energy.

    python examples/md_nve.py [--molecule ethanol] [--steps 2000] [--timestep 0.25] [--model model.ckpt]

Starts from a GFN2-xTB MD frame (examples/data/xtb_molecules.extxyz) with Maxwell-Boltzmann
velocities at 300 K, runs velocity Verlet and prints the total energy (eV) every --every steps,
then the slope of a straight-line fit of the total energy over time (eV per atom per ps).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from fastnnp.calculator import FastNNPCalculator

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = ["ethanol", "benzene", "acetic_acid", "acetamide", "pyridine"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--molecule", default="ethanol", choices=MOLECULES)
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--timestep", type=float, default=0.25, help="fs")
parser.add_argument("--every", type=int, default=200, help="print the energy every this many steps")
parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
parser.add_argument("--device", default="auto")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

atoms = next(a for a in read(ROOT / "examples/data/xtb_molecules.extxyz", ":") if a.info["name"] == args.molecule)
atoms.calc = FastNNPCalculator(args.model, device=args.device, dtype=getattr(torch, args.dtype))
MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(args.seed))
Stationary(atoms)
ZeroRotation(atoms)

dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
times_ps, energies = [], []


def record() -> None:
    """Keep the total energy (eV) at this step; print it every --every steps."""
    times_ps.append(dynamics.get_time() / (1000 * units.fs))
    energies.append(atoms.get_total_energy())
    if dynamics.nsteps % args.every == 0:
        print(f"step {dynamics.nsteps:6d}  t {times_ps[-1]:7.4f} ps  E_total {energies[-1]:.6f} eV  "
              f"T {atoms.get_temperature():6.1f} K")


dynamics.attach(record, interval=1)
dynamics.run(args.steps)
drift = np.polyfit(times_ps, energies, 1)[0] / len(atoms)
print(f"drift {drift:+.2e} eV/atom/ps over {times_ps[-1]:.4f} ps ({args.steps} steps of {args.timestep} fs, "
      f"{args.dtype}); total energy spread {np.ptp(energies):.2e} eV")
