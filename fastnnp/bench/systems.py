"""Benchmark systems built with ASE (no downloads), named ``family-N`` (N atoms).

Families (a request ``family-N`` is rounded to whole molecules or unit cells; the system's
name carries the atom count it really has, e.g. ``water-1000`` -> ``water-999``):

* ``droplet``: an open-boundary cluster of liquid-density water, the molecules nearest the
  centre of a larger water box. It stands in for a solvated or globular molecule of the same
  size: what a TensorNet call costs is set by the atom count and the neighbours per atom.
* ``water``: a periodic cubic box of liquid water (:func:`fastnnp.systems.water_box`).
* ``cu``: a periodic fcc copper crystal, a = 3.61 Å, k x k x k cubic cells (4k³ atoms, k >= 3).
* ``ethanols``: a batch of separate ethanol molecules, randomly rotated, evaluated in one call
  with one system index (and one energy) per molecule.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

from ..systems import random_rotations, water_box

FAMILIES = ("droplet", "water", "cu", "ethanols")
CU_LATTICE = 3.61  # Å
SEED = 0


class System(NamedTuple):
    """One benchmark input: ``atoms`` (all molecules of a batch, cell/pbc when periodic) and
    ``batch`` [N] int64 system index of every atom (all zeros for a single system)."""

    name: str
    family: str
    atoms: Atoms
    batch: np.ndarray

    @property
    def n_systems(self) -> int:
        return int(self.batch.max()) + 1


def parse(request: str) -> tuple[str, int]:
    """``"water-1000"`` -> ``("water", 1000)``; ValueError for an unknown family or size."""
    family, _, size = request.rpartition("-")
    if family not in FAMILIES or not size.isdigit() or int(size) < 1:
        raise ValueError(f"unknown system {request!r}: expected FAMILY-ATOMS with FAMILY one of {', '.join(FAMILIES)}")
    return family, int(size)


def build(request: str) -> System:
    """The system ``request`` (``family-N``) names, built deterministically (seed 0)."""
    family, size = parse(request)
    batch = None
    if family == "droplet":
        atoms = water_droplet(size)
    elif family == "water":
        atoms = water_box(size, seed=SEED)
    elif family == "cu":
        cells = max(3, round((size / 4) ** (1 / 3)))
        atoms = bulk("Cu", "fcc", a=CU_LATTICE, cubic=True).repeat(cells)
    else:
        atoms, batch = ethanol_batch(max(1, round(size / 9)))
    if batch is None:
        batch = np.zeros(len(atoms), dtype=np.int64)
    return System(f"{family}-{len(atoms)}", family, atoms, batch)


def water_droplet(n_atoms: int) -> Atoms:
    """An open-boundary droplet of round(n_atoms / 3) water molecules (no cell): those
    nearest the centre of a liquid-density periodic box holding eight times as many."""
    n_mol = max(1, round(n_atoms / 3))
    box = water_box(3 * 8 * n_mol, seed=SEED)
    molecules = box.positions.reshape(-1, 3, 3)
    distance = np.linalg.norm(molecules.mean(1) - box.cell.array.diagonal() / 2, axis=1)
    keep = np.sort(np.argsort(distance)[:n_mol])
    return Atoms(numbers=box.numbers.reshape(-1, 3)[keep].ravel(), positions=molecules[keep].reshape(-1, 3))


def ethanol_batch(count: int) -> tuple[Atoms, np.ndarray]:
    """``count`` randomly rotated ethanol molecules 20 Å apart (9 atoms each) and their
    system indices [9 * count]."""
    ethanol = molecule("CH3CH2OH")
    local = ethanol.positions - ethanol.positions.mean(0)
    rotations = random_rotations(count, np.random.default_rng(SEED))
    offsets = 20.0 * np.arange(count)[:, None] * np.array([1.0, 0.0, 0.0])
    positions = np.einsum("mij,aj->mai", rotations, local) + offsets[:, None, :]
    atoms = Atoms(numbers=np.tile(ethanol.numbers, count), positions=positions.reshape(-1, 3))
    return atoms, np.repeat(np.arange(count, dtype=np.int64), len(ethanol))
