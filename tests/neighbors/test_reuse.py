"""Verlet-skin reuse of the neighbour search (fastnnp.neighbors.reuse): bit-identical to a fresh
search at every step of random walks, rebuilds exactly when needed, and the models give the
same energies and forces with it."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import fastnnp
from fastnnp.kernels.common.neighbor_search import neighbor_table
from fastnnp.kernels.common.search_plan import PlannedTableSearch
from fastnnp.neighbors.reuse import VerletNeighborList, VerletNeighborTable, neighbor_builds, use_verlet_skin
from fastnnp.neighbors import neighbor_list

SKIN = 0.5
CUTOFF = 3.5
TRICLINIC = [[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 6.8]]


def system(kind: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """(pos, batch, box): "molecule" (open), "triclinic" (one periodic cell, some atoms outside
    it) or "batch" (two periodic systems with their own boxes)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "molecule":
        pos = torch.randn(30, 3, generator=g, dtype=torch.float64) * 2.0
        return pos.to(dtype), torch.zeros(30, dtype=torch.long), None
    cell = torch.tensor(TRICLINIC, dtype=torch.float64)
    if kind == "triclinic":
        pos = torch.rand(40, 3, generator=g, dtype=torch.float64) @ cell
        pos = pos + 0.5 * torch.randn(pos.shape, generator=g, dtype=torch.float64)
        return pos.to(dtype), torch.zeros(40, dtype=torch.long), cell.to(dtype)
    boxes = torch.stack([cell, torch.diag(torch.tensor([6.0, 7.0, 6.5], dtype=torch.float64))])
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([25, 20]))
    pos = torch.einsum("nk,nkl->nl", torch.rand(45, 3, generator=g, dtype=torch.float64), boxes[batch])
    return pos.to(dtype), batch, boxes.to(dtype)


def assert_same(got, expected):
    for name, a, b in zip(expected._fields, got, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("kind", ["molecule", "triclinic", "batch"])
@pytest.mark.parametrize("loop", [False, True], ids=["no-loop", "loop"])
@pytest.mark.parametrize("cutoff_lower", [0.0, 0.9], ids=["cl0", "cl0.9"])
def test_random_walk_is_bit_identical(kind, loop, cutoff_lower):
    pos, batch, box = system(kind)
    search = VerletNeighborList(SKIN)
    g = torch.Generator().manual_seed(1)
    steps = 60
    for _ in range(steps):
        pos = pos + 0.015 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)
        assert_same(search(pos, batch, CUTOFF, cutoff_lower, box, loop), neighbor_list(pos, batch, CUTOFF, cutoff_lower, box, loop))
    assert 1 <= search.builds <= steps // 6


@pytest.mark.parametrize("kind", ["molecule", "triclinic", "batch"])
def test_half_list_random_walk_is_bit_identical(kind):
    pos, batch, box = system(kind)
    search = VerletNeighborList(SKIN)
    g = torch.Generator().manual_seed(3)
    for _ in range(30):
        pos = pos + 0.015 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)
        assert_same(search(pos, batch, CUTOFF, 0.9, box, half=True), neighbor_list(pos, batch, CUTOFF, 0.9, box, half=True))
    assert 1 <= search.builds <= 5


def test_float32_random_walk_is_bit_identical():
    pos, batch, box = system("triclinic", torch.float32)
    search = VerletNeighborList(SKIN)
    g = torch.Generator().manual_seed(2)
    for _ in range(40):
        pos = pos + 0.03 * torch.randn(pos.shape, generator=g)
        assert_same(search(pos, batch, CUTOFF, 0.5, box), neighbor_list(pos, batch, CUTOFF, 0.5, box))
    assert 1 < search.builds <= 10


def test_rebuilds_exactly_when_an_atom_moves_more_than_half_the_skin():
    pos, batch, box = system("triclinic")
    search = VerletNeighborList(SKIN)
    search(pos, batch, CUTOFF, box=box)
    moved = pos.clone()
    moved[3, 0] += 0.49 * SKIN
    moved[7, 1] -= 0.49 * SKIN
    assert_same(search(moved, batch, CUTOFF, box=box), neighbor_list(moved, batch, CUTOFF, box=box))
    assert search.builds == 1
    moved[3, 0] += 0.02 * SKIN  # now 0.51 skin from the build
    assert_same(search(moved, batch, CUTOFF, box=box), neighbor_list(moved, batch, CUTOFF, box=box))
    assert search.builds == 2


def test_positions_are_copied_at_the_build():
    """Moving the caller's tensor in place (as an MD integrator on a shared buffer would)
    must not move the reference positions."""
    pos, batch, box = system("triclinic")
    search = VerletNeighborList(SKIN)
    search(pos, batch, CUTOFF, box=box)
    pos[0] += 0.6 * SKIN
    assert_same(search(pos, batch, CUTOFF, box=box), neighbor_list(pos, batch, CUTOFF, box=box))
    assert search.builds == 2


@pytest.mark.parametrize("change", ["box", "n_atoms", "batch", "cutoff_upper", "cutoff_lower", "loop", "no_box", "dtype"])
def test_changes_force_a_rebuild(change):
    pos, batch, box = system("batch")
    args = dict(pos=pos, batch=batch, cutoff_upper=CUTOFF, cutoff_lower=0.0, box=box, loop=False)
    search = VerletNeighborList(SKIN)
    search(**args)
    if change == "box":
        args["box"] = box * (1 + 1e-9)
    elif change == "n_atoms":
        args["pos"], args["batch"] = pos[:-1], batch[:-1]
    elif change == "batch":
        args["batch"] = batch.clone()
        args["batch"][24] = 1  # same atoms, one moved to the other system
    elif change == "no_box":
        args["box"] = None
    elif change == "dtype":
        args["pos"], args["box"] = pos.float(), box.float()
    else:
        args[change] = {"cutoff_upper": CUTOFF - 0.1, "cutoff_lower": 0.5, "loop": True}[change]
    assert_same(search(**args), neighbor_list(**args))
    assert search.builds == 2


def test_zero_skin_rebuilds_every_call():
    pos, batch, box = system("triclinic")
    search = VerletNeighborList(0.0)
    for _ in range(3):
        assert_same(search(pos, batch, CUTOFF, box=box), neighbor_list(pos, batch, CUTOFF, box=box))
    assert search.builds == 3


@pytest.mark.parametrize("kind", ["triclinic", "batch"])
def test_gradients_match(kind):
    """d/dpos and d/dbox (stress) of a function of the edges, after a reused step."""
    pos, batch, box = system(kind)
    search = VerletNeighborList(SKIN)
    search(pos, batch, CUTOFF, 0.9, box, True)
    pos = pos + 0.05 * torch.randn(pos.shape, dtype=pos.dtype)
    grads = []
    for fn in (search, neighbor_list):
        p, b = pos.clone().requires_grad_(), box.clone().requires_grad_()
        nl = fn(p, batch, CUTOFF, 0.9, b, True)
        loss = (torch.cos(nl.edge_weight) + nl.edge_vec[:, 0] * nl.edge_vec[:, 2]).sum()
        grads.append(torch.autograd.grad(loss, (p, b)))
    assert search.builds == 1
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize("skin", [-0.1, float("nan"), float("inf")])
def test_bad_skin_is_refused(skin):
    with pytest.raises(ValueError, match="skin"):
        VerletNeighborList(skin)
    with pytest.raises(ValueError, match="skin"):
        VerletNeighborTable(skin)
    with pytest.raises(ValueError, match="skin"):
        use_verlet_skin(nn.Module(), skin)


def molecule(data_dir, dtype):
    """z, pos, batch of the first molecule of the shipped reference inputs."""
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    first = ref["batch"] == 0
    z = torch.as_tensor(ref["z"][first])
    return z, torch.as_tensor(ref["pos"][first], dtype=dtype), torch.zeros(len(z), dtype=torch.long)


@pytest.mark.parametrize("name", ["tensornet", "et", "gn"])
def test_model_energies_and_forces_are_identical(data_dir, name):
    plain = fastnnp.load_model(data_dir / name / "model.ckpt", dtype=torch.float64)
    reused = fastnnp.load_model(data_dir / name / "model.ckpt", dtype=torch.float64)
    use_verlet_skin(reused, SKIN)
    z, pos, batch = molecule(data_dir, torch.float64)
    g = torch.Generator().manual_seed(3)
    steps = 20
    for _ in range(steps):
        pos = pos + 0.02 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)
        (e0, f0), (e1, f1) = plain(z, pos, batch), reused(z, pos, batch)
        assert torch.equal(e0, e1) and torch.equal(f0, f1)
    assert 1 <= neighbor_builds(reused) < steps


def test_periodic_stress_path_is_identical(data_dir):
    """TensorNet in a box: energy, forces and d energy / d box (for the stress) identical."""
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    z = torch.as_tensor(ref["pbc_z"])
    pos = torch.as_tensor(ref["pbc_pos"], dtype=torch.float64)
    box = torch.as_tensor(ref["pbc_box"], dtype=torch.float64)
    batch = torch.zeros(len(z), dtype=torch.long)
    plain = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", dtype=torch.float64)
    reused = copy.deepcopy(plain)
    use_verlet_skin(reused, SKIN)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        pos = pos + 0.02 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)
        results = []
        for model in (plain, reused):
            cell = box.clone().requires_grad_()
            energy, forces = model(z, pos, batch, box=cell)
            results.append((energy, forces, torch.autograd.grad(energy.sum(), cell)[0]))
        assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    assert neighbor_builds(reused) == 1


def test_model_plumbing(data_dir, tmp_path):
    """Own cache per representation, state dict unchanged, deepcopy / pickle / skin=0 work."""
    members = nn.ModuleList(
        fastnnp.load_model(data_dir / name / "model.ckpt", dtype=torch.float64) for name in ("tensornet", "et")
    )
    keys = list(members.state_dict())
    use_verlet_skin(members, SKIN)
    assert list(members.state_dict()) == keys
    caches = [m.representation_model.neighbor_search for m in members]
    assert all(isinstance(c, VerletNeighborList) for c in caches) and caches[0] is not caches[1]

    z, pos, batch = molecule(data_dir, torch.float64)
    expected = members[0](z, pos, batch)
    clone = copy.deepcopy(members)
    path = tmp_path / "model.pt"
    torch.save(members, path)
    loaded = torch.load(path, weights_only=False)
    for model in (clone, pickle.loads(pickle.dumps(members)), loaded):
        assert all(torch.equal(a, b) for a, b in zip(model[0](z, pos, batch), expected, strict=True))
        assert neighbor_builds(model) == 1  # the copied cache was reused
    assert neighbor_builds(members) == 1

    use_verlet_skin(members, 0)
    assert all(m.representation_model.neighbor_search is neighbor_list for m in members)
    assert neighbor_builds(members) == 0


def test_triton_table_gives_the_same_energies_and_forces(data_dir):
    """Triton backend (interpreter): the wider table adds zero-weight edges only."""
    path = data_dir / "tensornet" / "model.ckpt"
    plain = fastnnp.load_model(path, backend="triton")
    reused = fastnnp.load_model(path, backend="triton")
    use_verlet_skin(reused, SKIN)
    representation = reused.representation_model
    assert isinstance(representation.table_search, VerletNeighborTable)
    z, pos, batch = molecule(data_dir, torch.float32)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        (e0, f0), (e1, f1) = plain(z, pos, batch), reused(z, pos, batch)
        torch.testing.assert_close(e1, e0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(f1, f0, rtol=0, atol=1e-6 * max(1.0, float(f0.abs().max())))
        pos = pos + 0.05 * torch.randn(pos.shape, generator=g)
    assert neighbor_builds(reused) == 1
    widened = int(representation.table_search(pos, batch, representation.cutoff_upper).counts.sum())
    assert widened > int(neighbor_table(pos, batch, representation.cutoff_upper).counts.sum())

    use_verlet_skin(reused, 0)
    assert isinstance(representation.table_search, PlannedTableSearch)
