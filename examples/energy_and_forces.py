"""Energies and forces of a few molecules and a periodic box with a TorchMD-Net checkpoint.

    python examples/energy_and_forces.py [model.ckpt]

Defaults to the TensorNet checkpoint shipped with the tests (trained by torchmd-train 3.1.0 on
GFN2-xTB data of five organic molecules; energies in eV relative to per-element references,
forces in eV/Å). Water is outside its training data: the box only shows a periodic call.
"""

import pathlib
import sys

import torch
from ase.build import molecule

import fastnnp
from fastnnp.systems import water_box

checkpoint = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[1] / "tests/data/tensornet/model.ckpt"
model = fastnnp.load_model(checkpoint, derivative=True)

molecules = [molecule(name) for name in ("CH3CH2OH", "C6H6", "CH3COOH")]
z = torch.cat([torch.as_tensor(m.numbers) for m in molecules])
pos = torch.cat([torch.as_tensor(m.positions, dtype=torch.float32) for m in molecules])
batch = torch.cat([torch.full((len(m),), i) for i, m in enumerate(molecules)])
energy, forces = model(z, pos, batch)
for m, e in zip(molecules, energy[:, 0].tolist(), strict=True):
    print(f"{m.get_chemical_formula():>8}: energy {e:9.4f}")
print(f"largest force component {forces.abs().max():.4f}")

box = water_box(300)
energy, forces = model(
    torch.as_tensor(box.numbers), torch.as_tensor(box.positions, dtype=torch.float32),
    box=torch.as_tensor(box.cell.array, dtype=torch.float32),
)
print(f"water box of {len(box)} atoms: energy {energy.item():.4f}")
