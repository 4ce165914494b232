"""Tests of the Triton cell-list search (fastnnp.kernels.common.neighbor_search).

The reference is the pure-torch neighbour list ``fastnnp.neighbors.neighbor_list`` (loop=False):
the table must hold exactly its (receiver, sender, image) triples, padding elsewhere, and
``table_vectors`` must reproduce its edge vectors and their gradients. The kernel runs under
Triton's CPU interpreter here, so the systems are small.
"""

import pytest
import torch
from fastnnp.kernels.common import neighbor_search as ns
from fastnnp.kernels.common.neighbor_search import NeighborTable, neighbor_table, table_vectors

from fastnnp.neighbors import neighbor_list

# --------------------------------------------------------------------------------------
# helpers


def random_box(gen: torch.Generator, scale: float) -> torch.Tensor:
    """A random, well-conditioned triclinic cell (rows = lattice vectors)."""
    noise = 2 * torch.rand(3, 3, generator=gen, dtype=torch.float64) - 1
    return scale * (torch.eye(3, dtype=torch.float64) + 0.3 * noise)


def inside(gen: torch.Generator, n: int, box: torch.Tensor) -> torch.Tensor:
    """n random positions inside the cell."""
    return torch.rand(n, 3, generator=gen, dtype=box.dtype) @ box


def valid_mask(table: NeighborTable) -> torch.Tensor:
    k = table.neighbors.shape[1]
    return torch.arange(k) < table.counts.long().unsqueeze(1)


def check(pos, batch, cutoff_upper, cutoff_lower=0.0, box=None, capacity=None) -> NeighborTable:
    """Compare the table and its vectors (values and gradients w.r.t. pos and box) with the
    reference neighbour list; returns the table."""
    table = neighbor_table(pos, batch, cutoff_upper, cutoff_lower, box=box, capacity=capacity)
    n, k = table.neighbors.shape
    assert n == pos.shape[0]
    assert table.neighbors.dtype == table.images.dtype == table.counts.dtype == torch.int32
    assert table.images.shape == (n, k, 3) and table.counts.shape == (n,)
    assert n == 0 or int(table.counts.max()) <= k

    # padding: the receiver itself, image 0
    valid = valid_mask(table)
    rows = torch.arange(n).unsqueeze(1).expand(n, k)
    assert torch.equal(table.neighbors[~valid].long(), rows[~valid])
    assert not table.images[~valid].any()

    # the same (i, j, image) triples as the reference, each once
    i, j, img = rows[valid], table.neighbors[valid].long(), table.images[valid].long()
    got = list(zip(i.tolist(), j.tolist(), map(tuple, img.tolist()), strict=True))
    assert len(set(got)) == len(got), "duplicate entries"
    ref = neighbor_list(pos, batch, cutoff_upper, cutoff_lower, box=box, loop=False)
    ref_index = {t: e for e, t in enumerate(zip(*ref.edge_index.tolist(), map(tuple, ref.image.tolist()), strict=True))}
    assert set(got) == set(ref_index)
    if not got:
        return table

    # vectors (in the input dtype), then gradients in float64 on both sides: the table's pairs
    # through table_vectors against the reference list's (float32 sums over edges in different
    # orders differ by their rounding, not by a bug)
    vec = table_vectors(table, pos, batch, box)
    assert vec.shape == (n, k, 3) and vec.dtype == pos.dtype
    assert not vec.detach()[~valid].any()
    perm = torch.tensor([ref_index[t] for t in got])
    torch.testing.assert_close(vec.detach()[valid], ref.edge_vec.detach()[perm])
    leaves, leaves_ref = ([t.detach().double().requires_grad_() for t in (pos, box) if t is not None] for _ in range(2))
    vec64 = table_vectors(table, leaves[0], batch, leaves[1] if box is not None else None)
    ref64 = neighbor_list(leaves_ref[0], batch, cutoff_upper, cutoff_lower,
                          box=leaves_ref[1] if box is not None else None, loop=False)
    assert set(zip(*ref64.edge_index.tolist(), map(tuple, ref64.image.tolist()), strict=True)) == set(ref_index)
    grads = torch.autograd.grad(vec64.square().sum(), leaves)
    for got_grad, expected in zip(grads, torch.autograd.grad(ref64.edge_vec.square().sum(), leaves_ref), strict=True):
        torch.testing.assert_close(got_grad, expected)
    return table


def one_system(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


# --------------------------------------------------------------------------------------
# open boundaries


def test_open_molecule():
    gen = torch.Generator().manual_seed(1)
    pos = torch.rand(50, 3, generator=gen) * torch.tensor([10.0, 7.0, 5.0])  # 3 x 2 x 1 bins
    check(pos, one_system(50), 3.0)


def test_open_batch_of_three():
    gen = torch.Generator().manual_seed(2)
    sizes = [7, 19, 30]
    # the systems overlap in space: no pair may cross systems
    pos = torch.cat([(2.0 + k) * torch.rand(s, 3, generator=gen) for k, s in enumerate(sizes)])
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    table = check(pos, batch, 3.0)
    i = torch.arange(pos.shape[0]).unsqueeze(1).expand_as(table.neighbors)
    valid = valid_mask(table)
    assert torch.equal(batch[table.neighbors[valid].long()], batch[i[valid]])


def test_open_cutoff_lower():
    gen = torch.Generator().manual_seed(3)
    pos = 5.0 * torch.rand(30, 3, generator=gen)
    check(pos, one_system(30), 3.0, cutoff_lower=1.5)


def test_sparse_systems_coarse_bins():
    """Few atoms spread over a large region: the bin grid is capped at 2 bins per atom."""
    gen = torch.Generator().manual_seed(12)
    centres = 28.0 * torch.rand(4, 3, generator=gen)
    pos = torch.cat([centres, centres + 1.5 * torch.rand(4, 3, generator=gen)])  # 4 close pairs
    pos[3] = torch.tensor([0.2, 15.0, 15.0])
    pos[7] = torch.tensor([29.5, 15.5, 14.5])  # a pair across the periodic boundary
    for box in (None, torch.diag(torch.full((3,), 30.0))):
        plan = ns.plan_search(pos, one_system(8), 3.0, 0.0, box)
        assert int(plan.nbins.prod()) <= 16
        check(pos, one_system(8), 3.0, box=box)


def test_bin_cap():
    nb = ns._cap_bins(torch.tensor([[100.0, 1, 1], [100, 2, 1], [9, 9, 9], [3, 4, 5]]), torch.tensor([2, 2, 8, 40]))
    assert (nb.prod(dim=1) <= torch.tensor([4.0, 4, 16, 80])).all() and (nb >= 1).all()
    assert nb[3].tolist() == [3, 4, 5]  # under the limit: unchanged


def test_empty_input():
    table = neighbor_table(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3.0, capacity=8)
    assert table.neighbors.shape == (0, 8) and table.images.shape == (0, 8, 3) and table.counts.shape == (0,)


# --------------------------------------------------------------------------------------
# periodic boxes


def test_orthorhombic_box():
    gen = torch.Generator().manual_seed(4)
    edges = torch.tensor([9.0, 10.0, 11.0])
    pos = torch.rand(24, 3, generator=gen) * edges
    table = check(pos, one_system(24), 3.2, box=torch.diag(edges))
    # the capacity estimate (a multiple of 16) sufficed here and is not wasteful
    k = table.neighbors.shape[1]
    assert k == ns.plan_search(pos, one_system(24), 3.2, 0.0, torch.diag(edges)).capacity
    assert k % 16 == 0 and k < 2 * int(table.counts.max()) + 16


def test_triclinic_boxes_per_system():
    gen = torch.Generator().manual_seed(5)
    boxes = torch.stack([random_box(gen, 9.0), random_box(gen, 8.0)]).float()
    boxes[1] = boxes[1][[1, 0, 2]]  # left-handed cell
    assert torch.linalg.det(boxes[1]) < 0 < torch.linalg.det(boxes[0])
    pos = torch.cat([inside(gen, 14, boxes[0]), inside(gen, 10, boxes[1])])
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([14, 10]))
    check(pos, batch, 3.0, box=boxes)


def test_cell_thinner_than_cutoff():
    gen = torch.Generator().manual_seed(6)
    box = torch.tensor([[6.0, 0.0, 0.0], [1.0, 6.5, 0.0], [0.5, -0.3, 1.2]])
    pos = inside(gen, 6, box)
    table = check(pos, one_system(6), 2.5, box=box)
    # periodic images of an atom itself are neighbours; no self pair with image 0
    valid = valid_mask(table)
    rows = torch.arange(6).unsqueeze(1).expand_as(table.neighbors)
    own = valid & (table.neighbors.long() == rows)
    assert own.any()
    assert table.images[own].abs().sum(dim=1).min() > 0


def test_atoms_outside_cell():
    gen = torch.Generator().manual_seed(7)
    box = random_box(gen, 8.0).float()
    shifts = torch.randint(-3, 4, (16, 3), generator=gen).float()
    pos = inside(gen, 16, box) + shifts @ box
    check(pos, one_system(16), 3.0, box=box)


def test_periodic_cutoff_lower():
    gen = torch.Generator().manual_seed(8)
    box = random_box(gen, 8.0).float()
    # also the (1, 3, 3) form of a shared box
    check(inside(gen, 16, box), one_system(16), 3.0, cutoff_lower=1.2, box=box.unsqueeze(0))


def test_float64():
    gen = torch.Generator().manual_seed(9)
    box = random_box(gen, 8.0)
    pos = inside(gen, 12, box) + 0.5
    check(pos, one_system(12), 3.0, box=box)


# --------------------------------------------------------------------------------------
# bin-sorted numbering


def _triples(table: NeighborTable, names: torch.Tensor) -> set:
    """The table's (receiver, sender, image) triples, atoms named by ``names`` [N]."""
    valid = valid_mask(table)
    rows = torch.arange(table.neighbors.shape[0]).unsqueeze(1).expand_as(table.neighbors)
    i, j = names[rows[valid]], names[table.neighbors[valid].long()]
    return set(zip(i.tolist(), j.tolist(), map(tuple, table.images[valid].tolist()), strict=True))


@pytest.mark.parametrize("periodic", [False, True], ids=["open-batch", "triclinic-per-system"])
def test_sorted_numbering_is_the_given_table_renumbered(periodic):
    """A plan with ``sort_atoms`` numbers rows and senders in the bin-sorted order: the same
    triples as the given numbering once renamed by ``order``, ``inverse`` its inverse, each
    system's atoms still contiguous and in system order; no plan sorts below SORT_MIN_ATOMS."""
    gen = torch.Generator().manual_seed(10)
    if periodic:
        box = torch.stack([random_box(gen, 9.0), random_box(gen, 8.0)]).float()
        shifts = torch.randint(-2, 3, (24, 3), generator=gen).float()
        pos = torch.cat([inside(gen, 14, box[0]), inside(gen, 10, box[1])])
        pos = pos + torch.bmm(shifts.unsqueeze(1), box[[0] * 14 + [1] * 10]).squeeze(1)
        sizes = [14, 10]
    else:
        box, sizes = None, [7, 19, 30]
        pos = torch.cat([(2.0 + k) * torch.rand(s, 3, generator=gen) for k, s in enumerate(sizes)])
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    given = ns.plan_search(pos, batch, 3.0, 0.0, box)
    assert not given.sort_atoms and len(pos) < ns.SORT_MIN_ATOMS
    table, _, _ = ns.planned_search(given, pos, box)
    assert table.order is None and table.inverse is None
    planned, _, _ = ns.planned_search(ns.plan_search(pos, batch, 3.0, 0.0, box, sort_atoms=True), pos, box)
    n = len(pos)
    assert not torch.equal(planned.order, torch.arange(n)), "the bin order is the given one: weak test"
    assert torch.equal(planned.order[planned.inverse], torch.arange(n))
    assert torch.equal(batch[planned.order], batch)
    assert _triples(planned, planned.order) == _triples(table, torch.arange(n))
    ref = neighbor_list(pos, batch, 3.0, box=box, loop=False)  # the torch reference list
    assert _triples(planned, planned.order) == set(zip(*ref.edge_index.tolist(), map(tuple, ref.image.tolist()), strict=True))
    assert torch.equal(planned.counts.long(), table.counts.long()[planned.order])


# --------------------------------------------------------------------------------------
# capacity


def test_overflow_grows_capacity():
    gen = torch.Generator().manual_seed(10)
    pos = 3.0 * torch.rand(30, 3, generator=gen)  # every atom sees every other
    batch = one_system(30)
    table = check(pos, batch, 5.0, capacity=16)
    k = table.neighbors.shape[1]
    assert int(table.counts.max()) > 16 and k >= int(table.counts.max()) and k % 16 == 0
    # the returned K is kept when passed back
    again = neighbor_table(pos, batch, 5.0, capacity=k)
    assert all(torch.equal(a, b) for a, b in zip(table[:3], again[:3], strict=True))


# --------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pos": torch.zeros(4, 2)}, "pos must be a tensor of shape"),
        ({"batch": torch.zeros(3, dtype=torch.long)}, "batch must be a tensor of shape"),
        ({"pos": torch.tensor([[0.0, 0.0, float("nan")]] * 4)}, "non-finite"),
        ({"cutoff_upper": 0.0}, "cutoff_upper"),
        ({"cutoff_upper": -1.0}, "cutoff_upper"),
        ({"cutoff_lower": 3.0}, "cutoff_lower"),
        ({"box": torch.zeros(2, 3)}, "box must have shape"),
        ({"box": torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 5, 0]])}, "singular"),
        ({"box": torch.diag(torch.tensor([5.0, 5.0, 1e-6]))}, "too thin"),
        ({"capacity": 0}, "capacity"),
    ],
)
def test_bad_input(kwargs, match, monkeypatch):
    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("the kernel must not be launched for bad input")

    monkeypatch.setattr(ns, "_neighbor_kernel", NoLaunch())
    args = {"pos": torch.rand(4, 3), "batch": one_system(4), "cutoff_upper": 3.0, "cutoff_lower": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        neighbor_table(**args)
