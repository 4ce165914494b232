"""Test and benchmark systems built with ASE (no downloads)."""

import numpy as np
from ase import Atoms
from ase.build import molecule

WATER_VOLUME = 29.9  # Å^3 per molecule at 1 g/cm^3


def water_box(n_atoms: int, seed: int = 0) -> Atoms:
    """A periodic cubic box of about ``n_atoms`` atoms of liquid-density water.

    Molecules sit on a simple cubic grid with random orientations (no overlaps); the box
    holds ``round(n_atoms / 3)`` molecules and has edge (n_molecules * 29.9 Å^3)^(1/3).
    """
    rng = np.random.default_rng(seed)
    n_mol = max(1, round(n_atoms / 3))
    edge = (n_mol * WATER_VOLUME) ** (1 / 3)
    per_side = int(np.ceil(n_mol ** (1 / 3)))
    spacing = edge / per_side
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[rng.permutation(len(grid))[:n_mol]] * spacing + spacing / 2
    water = molecule("H2O")
    local = water.positions - water.get_center_of_mass()
    rotations = random_rotations(n_mol, rng)
    positions = np.einsum("mij,aj->mai", rotations, local) + sites[:, None, :]
    return Atoms(
        numbers=np.tile(water.numbers, n_mol), positions=positions.reshape(-1, 3),
        cell=np.eye(3) * edge, pbc=True,
    )


def random_rotations(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniformly distributed proper rotation matrices [count, 3, 3]."""
    q, r = np.linalg.qr(rng.standard_normal((count, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q * np.sign(np.linalg.det(q))[:, None, None]
