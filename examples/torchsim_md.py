"""Batched Langevin MD in torch-sim: several molecules in one model call per step.

    python examples/torchsim_md.py [--steps 100] [--model tests/data/tensornet/model.ckpt]
"""

import argparse
from pathlib import Path

import torch
import torch_sim as ts
from ase.io import read

from fastnnp.torchsim import FastNNPModel

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=ROOT / "tests/data/tensornet/model.ckpt", help="checkpoint (eV, Å)")
parser.add_argument("--steps", type=int, default=100)
args = parser.parse_args()

molecules = read(ROOT / "examples/data/xtb_molecules.extxyz", ":")
model = FastNNPModel(str(args.model), dtype=torch.float32)
final = ts.integrate(molecules, model, integrator=ts.nvt_langevin, n_steps=args.steps, temperature=300.0,
                     timestep=0.0005)  # ps
for k, energy in enumerate(final.energy.tolist()):
    print(f"system {k} ({len(molecules[k])} atoms): E_pot {energy:.4f} eV")
