"""Physical consistency of the reference path in float64: forces are minus the energy
gradient; energy is invariant and forces equivariant under rotations, reflections,
translations and permutations; periodic energies are extensive over supercells."""

import numpy as np
import pytest
import torch
from ase import Atoms

import fastnnp
from fastnnp.models.factory import build_model
from fastnnp.systems import random_rotations

DTYPE = torch.float64


@pytest.fixture(scope="module")
def tensornet(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", dtype=DTYPE)


@pytest.fixture(scope="module")
def molecule(data_dir):
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    first = ref["batch"] == 0
    return torch.as_tensor(ref["z"][first]), torch.as_tensor(ref["pos"][first], dtype=DTYPE)


def _so3_model(data_dir):
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", dtype=DTYPE)
    hparams = dict(model_hparams(data_dir), equivariance_invariance_group="SO(3)", precision=64)
    so3 = build_model(hparams)
    so3.load_state_dict(model.state_dict())
    return so3.eval()


def model_hparams(data_dir):
    from fastnnp.checkpoint import read_checkpoint

    return read_checkpoint(data_dir / "tensornet" / "model.ckpt").hparams


def test_forces_are_minus_the_finite_difference_gradient(tensornet, molecule):
    z, pos = molecule
    _, forces = tensornet(z, pos)
    step = 1e-5
    numeric = torch.zeros_like(pos)
    for atom in range(len(z)):
        for axis in range(3):
            shifted = [pos.clone(), pos.clone()]
            shifted[0][atom, axis] += step
            shifted[1][atom, axis] -= step
            e_plus, e_minus = (float(tensornet(z, p)[0].detach()) for p in shifted)
            numeric[atom, axis] = -(e_plus - e_minus) / (2 * step)
    torch.testing.assert_close(forces, numeric, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
def test_rotation_translation_permutation(tensornet, molecule, data_dir, group):
    model = tensornet if group == "O(3)" else _so3_model(data_dir)
    z, pos = molecule
    energy, forces = model(z, pos)
    rng = np.random.default_rng(1)
    rotation = torch.as_tensor(random_rotations(1, rng)[0])
    shift = torch.tensor([3.0, -1.5, 20.0], dtype=DTYPE)
    perm = torch.as_tensor(rng.permutation(len(z)))
    e2, f2 = model(z[perm], pos[perm] @ rotation.T + shift)
    torch.testing.assert_close(e2, energy, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(f2, forces[perm] @ rotation.T, atol=1e-10, rtol=1e-9)


def test_o3_model_is_reflection_invariant_and_so3_is_not(tensornet, molecule, data_dir):
    z, pos = molecule
    mirror = pos * torch.tensor([-1.0, 1.0, 1.0], dtype=DTYPE)
    e, _ = tensornet(z, pos)
    torch.testing.assert_close(tensornet(z, mirror)[0], e, atol=1e-10, rtol=1e-10)
    so3 = _so3_model(data_dir)
    assert abs(float(so3(z, mirror)[0] - so3(z, pos)[0])) > 1e-8


def _random_cell(cell, count, seed):
    rng = np.random.default_rng(seed)
    numbers, positions = [], []
    cell = np.asarray(cell, dtype=float)
    while len(positions) < count:
        candidate = rng.random(3) @ cell
        probe = Atoms(positions=positions + [candidate], cell=cell, pbc=True)
        if len(positions) == 0 or probe.get_distances(len(positions), range(len(positions)), mic=True).min() > 1.0:
            positions.append(candidate)
            numbers.append(int(rng.choice([1, 6, 7, 8])))
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


@pytest.mark.parametrize(
    "cell",
    [np.diag([6.0, 6.5, 7.0]), np.array([[6.0, 0.0, 0.0], [2.1, 6.2, 0.0], [-1.3, 1.7, 6.4]])],
    ids=["orthorhombic", "triclinic"],
)
def test_supercell_energy_is_extensive(tensornet, cell):
    """Cells smaller than twice the cutoff (4.5 Å): atoms see several images of each other."""
    atoms = _random_cell(cell, 6, seed=3)
    super_atoms = atoms.repeat((2, 2, 2))

    def evaluate(a):
        z = torch.as_tensor(a.numbers)
        pos = torch.as_tensor(a.positions, dtype=DTYPE)
        return tensornet(z, pos, box=torch.as_tensor(a.cell.array, dtype=DTYPE))

    e1, f1 = evaluate(atoms)
    e8, f8 = evaluate(super_atoms)
    torch.testing.assert_close(e8, 8 * e1, atol=1e-9, rtol=1e-10)
    torch.testing.assert_close(f8, f1.repeat(8, 1), atol=1e-9, rtol=1e-9)


def test_atoms_outside_the_cell_are_wrapped(tensornet):
    atoms = _random_cell(np.diag([7.0, 7.5, 8.0]), 5, seed=4)
    box = torch.as_tensor(atoms.cell.array, dtype=DTYPE)
    z = torch.as_tensor(atoms.numbers)
    pos = torch.as_tensor(atoms.positions, dtype=DTYPE)
    moved = pos + torch.tensor([[7.0, 0, 0], [0, -15.0, 0], [0, 0, 24.0], [-7.0, 7.5, 8.0], [0, 0, 0]], dtype=DTYPE)
    e, f = tensornet(z, pos, box=box)
    e2, f2 = tensornet(z, moved, box=box)
    torch.testing.assert_close(e2, e, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(f2, f, atol=1e-10, rtol=1e-10)
