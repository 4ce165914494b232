"""Small ASE systems for the calculator tests, from the shipped TorchMD-Net reference data."""


import numpy as np
from ase import Atoms

from . import DATA
TENSORNET = DATA / "tensornet" / "model.ckpt"
ET = DATA / "et" / "model.ckpt"
GN = DATA / "gn" / "model.ckpt"

_REFERENCE = np.load(DATA / "tensornet" / "reference.npz")


def reference_molecule(index: int = 0) -> Atoms:
    """Molecule ``index`` of the 10-molecule reference batch (open boundaries)."""
    mask = _REFERENCE["batch"] == index
    return Atoms(numbers=_REFERENCE["z"][mask], positions=_REFERENCE["pos"][mask].astype(np.float64))


def triclinic_cell(index: int = 0, seed: int = 0) -> Atoms:
    """Molecule ``index`` in a small sheared periodic cell (about 7 Å, thinner than twice the
    4.5 Å cutoff, so atoms see several images of each other)."""
    atoms = reference_molecule(index)
    rng = np.random.default_rng(seed)
    cell = np.array([[7.0, 0.0, 0.0], [1.3, 6.6, 0.0], [-0.8, 1.1, 7.2]]) + 0.2 * rng.standard_normal((3, 3))
    atoms.set_cell(cell)
    atoms.set_pbc(True)
    atoms.positions = atoms.positions - atoms.positions.mean(0) + cell.sum(0) / 2
    return atoms


def periodic_box() -> Atoms:
    """The reference periodic box: 10 molecules, 98 atoms, 11 Å cubic cell."""
    return Atoms(
        numbers=_REFERENCE["pbc_z"], positions=_REFERENCE["pbc_pos"].astype(np.float64),
        cell=_REFERENCE["pbc_box"].astype(np.float64), pbc=True,
    )
