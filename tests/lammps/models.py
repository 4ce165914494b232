"""Tiny float64 checkpoints (F=16) for the LAMMPS tests, built with TorchMD-Net, and a small
triclinic box of H, C, N, O."""

import numpy as np
from ase import Atoms

from tests.helpers.variants import build_reference, make_hparams, write_checkpoint

# cutoff 2.5 Å: the ghost shell of a two-hop model is 5 Å, about 250 ghosts per domain
TINY = dict(embedding_dimension=16, num_rbf=8, cutoff_upper=2.5, precision=64, num_heads=2)
ARCHITECTURES = {
    "tn": dict(num_layers=1),  # 2 hops: the embedding and one interaction
    "et": dict(num_layers=1, neighbor_embedding=True),  # 2 hops
    "gn": dict(num_layers=2, neighbor_embedding=False),  # 2 hops
}
# ghost exchanges per force call: one per message-passing module output (ET's layers give x and vec)
EXCHANGES = {"tn": 2, "et": 3, "gn": 2}
CELL = np.array([[6.4, 0.0, 0.0], [1.2, 6.1, 0.0], [-0.9, 1.3, 6.3]])


def tiny_checkpoint(directory, architecture: str, seed: int = 3, **overrides):
    """A randomised (mean and std too) TorchMD-Net model of ``architecture`` written as a .ckpt."""
    hp = make_hparams(architecture, **TINY, **ARCHITECTURES[architecture], **overrides)
    model = build_reference(hp, seed=seed)
    return write_checkpoint(directory / f"{architecture}.ckpt", model.state_dict(), hp)


def triclinic_box(n_atoms: int = 18, seed: int = 4, scale: float = 1.0) -> Atoms:
    """Random H, C, N, O atoms in a sheared cell (``scale × CELL``; at scale 1 thinner than twice
    the tiny models' ghost shell), at least 1.1 Å apart under every periodic image."""
    rng = np.random.default_rng(seed)
    cell = scale * CELL
    images = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]) @ cell
    while True:
        positions = rng.random((n_atoms, 3)) @ cell
        delta = positions[:, None, None, :] - positions[None, :, None, :] + images[None, None]
        dist = np.linalg.norm(delta, axis=-1)
        dist[np.arange(n_atoms), np.arange(n_atoms), 13] = np.inf
        if dist.min() > 1.1:
            break
    numbers = rng.choice([1, 6, 7, 8], n_atoms)
    numbers[:4] = [1, 6, 7, 8]
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
