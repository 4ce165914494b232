"""Tests of the cell-list neighbour search (fastnnp.neighbors).

The reference is a brute-force numpy search that enumerates every lattice translation in a
range wide enough for the cell and the positions; it works on the unwrapped positions as
given, so it checks the images returned for atoms outside the cell too.
"""

import itertools

import numpy as np
import pytest
import torch

from fastnnp.neighbors import cell_list as nbmod
from fastnnp.neighbors import NeighborList, neighbor_list


@pytest.fixture(autouse=True, params=["all-pairs", "cell-list"])
def search_path(request, monkeypatch):
    """Every test runs on both searches for open systems: small molecules take the all-pairs path
    by default; ALL_PAIRS_ATOMS = 0 forces the cell list."""
    if request.param == "cell-list":
        monkeypatch.setattr(nbmod, "ALL_PAIRS_ATOMS", 0)
    return request.param


# --------------------------------------------------------------------------------------
# helpers


def reference(pos, batch, cutoff_upper, cutoff_lower=0.0, box=None, loop=False, pbc=None):
    """{(i, j, image): distance} by explicit enumeration of lattice translations."""
    pos = np.asarray(pos, dtype=np.float64)
    batch = np.asarray(batch)
    out = {}
    for s in np.unique(batch):
        idx = np.nonzero(batch == s)[0]
        p = pos[idx]
        if box is None:
            cell, periodic = np.eye(3), [False] * 3
        else:
            b = np.asarray(box, dtype=np.float64)
            cell = b if b.ndim == 2 else b[s]
            periodic = [True] * 3 if pbc is None else [bool(x) for x in pbc]
        frac = p @ np.linalg.inv(cell)
        vol = abs(np.linalg.det(cell))
        heights = [vol / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
        ranges = []
        for k in range(3):
            if periodic[k]:
                span = frac[:, k].max() - frac[:, k].min()
                r = int(np.ceil(span + cutoff_upper / heights[k])) + 1
                ranges.append(range(-r, r + 1))
            else:
                ranges.append(range(0, 1))
        diff = p[:, None, None, :] - p[None, :, None, :]
        images = np.array(list(itertools.product(*ranges)), dtype=np.int64)
        step = max(1, 2_000_000 // max(1, len(idx) ** 2))
        for k0 in range(0, len(images), step):
            imgs = images[k0 : k0 + step]
            vec = diff - (imgs.astype(np.float64) @ cell)[None, None]
            d = np.sqrt((vec * vec).sum(-1))
            ii, jj, kk = np.nonzero((d < cutoff_upper) & (d >= cutoff_lower))
            for a, b_, k in zip(ii.tolist(), jj.tolist(), kk.tolist(), strict=True):
                img = tuple(imgs[k].tolist())
                if a == b_ and img == (0, 0, 0):
                    continue
                out[(int(idx[a]), int(idx[b_]), img)] = float(d[a, b_, k])
        if loop:
            for a in idx.tolist():
                out[(a, a, (0, 0, 0))] = 0.0
    return out


def as_dict(nl: NeighborList):
    ei = nl.edge_index.tolist()
    img = nl.image.tolist()
    w = nl.edge_weight.detach().double().tolist()
    return {(a, b, tuple(c)): x for a, b, c, x in zip(ei[0], ei[1], img, w, strict=True)}


def check_structure(nl: NeighborList, pos, batch, box, cutoff_upper, cutoff_lower, loop):
    """Invariants independent of the reference: dtypes, order, vectors, cutoffs."""
    ei, vec, w, img = nl
    e = ei.shape[1]
    assert ei.dtype == torch.long and img.dtype == torch.long
    assert ei.shape == (2, e) and vec.shape == (e, 3) and w.shape == (e,) and img.shape == (e, 3)
    assert vec.dtype == pos.dtype and w.dtype == pos.dtype
    # sorted by receiver, then sender, then image; no duplicates
    keys = list(zip(ei[0].tolist(), ei[1].tolist(), map(tuple, img.tolist()), strict=True))
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    # no pairs across systems
    assert bool((batch[ei[0]] == batch[ei[1]]).all())
    # edge_vec = pos[i] - pos[j] - image @ box[system]
    p = pos.detach().double()
    expected = p[ei[0]] - p[ei[1]]
    if box is not None:
        b = box.detach().double()
        cells = b.expand(int(batch.max()) + 1, 3, 3) if b.dim() == 2 else b
        expected = expected - torch.einsum("ek,ekx->ex", img.double(), cells[batch[ei[0]]])
    tol = 1e-10 if pos.dtype == torch.float64 else 2e-4
    torch.testing.assert_close(vec.detach().double(), expected, atol=tol, rtol=0)
    torch.testing.assert_close(w.detach().double(), vec.detach().double().norm(dim=1), atol=tol, rtol=0)
    # both directions, with exactly opposite vectors and equal lengths
    where = {k: n for n, k in enumerate(keys)}
    rev = torch.tensor([where[(j, i, tuple(-x for x in im))] for i, j, im in keys], dtype=torch.long)
    assert torch.equal(vec.detach()[rev], -vec.detach())
    assert torch.equal(w.detach()[rev], w.detach())
    is_loop = (ei[0] == ei[1]) & (img == 0).all(dim=1)
    # exact cutoffs on the returned values; self loops only with loop=True, one per atom
    assert bool((w[~is_loop] < cutoff_upper).all())
    assert bool((w[~is_loop] >= cutoff_lower).all())
    if loop:
        assert int(is_loop.sum()) == pos.shape[0]
        assert bool((w[is_loop] == 0).all())
    else:
        assert int(is_loop.sum()) == 0


def assert_matches(nl: NeighborList, ref: dict, cutoff_upper, cutoff_lower, dtype):
    """Same (i, j, image) set and distances as the reference. In float32 pairs whose exact
    distance is within rounding of a cutoff may legitimately fall on either side."""
    ours = as_dict(nl)
    if dtype == torch.float64:
        slack, dtol = 0.0, 1e-10
    else:
        slack, dtol = 1e-4, 2e-4
    missing = [k for k in ref if k not in ours]
    extra = [k for k in ours if k not in ref]
    bad_missing = [k for k in missing if not _near_cutoff(ref[k], cutoff_upper, cutoff_lower, slack)]
    bad_extra = [k for k in extra if not _near_cutoff(ours[k], cutoff_upper, cutoff_lower, slack)]
    assert not bad_missing, f"{len(bad_missing)} pairs missing, e.g. {bad_missing[:5]}"
    assert not bad_extra, f"{len(bad_extra)} unexpected pairs, e.g. {bad_extra[:5]}"
    common = [k for k in ref if k in ours]
    if common:
        diff = max(abs(ref[k] - ours[k]) for k in common)
        assert diff <= dtol, diff
    assert len(missing) + len(extra) <= max(2, len(ref) // 1000)


def _near_cutoff(d, cu, cl, slack):
    return abs(d - cu) <= slack or (cl > 0 and abs(d - cl) <= slack)


def random_cell(rng, lengths, skew=0.4, left_handed=False):
    """Arbitrary (not reduced) triclinic cell: rows of the given lengths with random directions
    within a cone around the axes."""
    rows = []
    for k, length in enumerate(lengths):
        axis = np.eye(3)[k]
        v = axis + skew * rng.uniform(-1, 1, 3)
        rows.append(length * v / np.linalg.norm(v))
    cell = np.array(rows)
    if left_handed:
        cell[[0, 1]] = cell[[1, 0]]
    return cell


def run_case(pos, batch, cu, cl=0.0, box=None, loop=False, pbc=None, dtype=torch.float64):
    pos_t = torch.as_tensor(pos, dtype=dtype)
    batch_t = torch.as_tensor(batch, dtype=torch.long)
    box_t = None if box is None else torch.as_tensor(box, dtype=dtype)
    nl = neighbor_list(pos_t, batch_t, cu, cl, box=box_t, loop=loop, pbc=pbc)
    check_structure(nl, pos_t, batch_t, box_t, cu, cl, loop)
    # The reference uses the positions and box as rounded to the dtype under test.
    ref = reference(
        pos_t.double().numpy(), batch, cu, cl, None if box_t is None else box_t.double().numpy(), loop, pbc
    )
    assert_matches(nl, ref, cu, cl, dtype)
    return nl, ref


# --------------------------------------------------------------------------------------
# against the brute-force reference

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("cutoff_lower", [0.0, 1.1])
@pytest.mark.parametrize("size", ["large", "small", "tiny"])
def test_random_triclinic_cells(dtype, loop, cutoff_lower, size):
    """Random arbitrary triclinic cells: wider than 2 cutoffs, between 1 and 2 cutoffs along
    some axes, and thinner than the cutoff (several images of the same neighbour, periodic
    images of an atom itself). Atoms partly outside the cell."""
    rng = np.random.default_rng(["large", "small", "tiny"].index(size) * 4 + 2 * int(loop) + int(cutoff_lower > 0))
    cu = 3.0
    lengths = {"large": (10.0, 11.0, 9.0), "small": (4.5, 2.0, 7.0), "tiny": (1.7, 2.5, 1.2)}[size]
    n = {"large": 120, "small": 25, "tiny": 6}[size]
    for left in (False, True):
        cell = random_cell(rng, lengths, left_handed=left)
        frac = rng.uniform(-0.5, 1.5, (n, 3))
        pos = frac @ cell
        _, ref = run_case(pos, np.zeros(n, int), cu, cutoff_lower, box=cell, loop=loop, dtype=dtype)
        if size == "tiny":
            assert any(i == j and img != (0, 0, 0) for i, j, img in ref)  # self images exist


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared_box", [False, True])
def test_batch_with_boxes(dtype, shared_box):
    """Several systems of different sizes (one empty-free, one with a single atom) with their own
    cells or one shared cell; no pairs across systems."""
    rng = np.random.default_rng(7)
    sizes = [30, 1, 12, 40, 5]
    batch = np.repeat(np.arange(len(sizes)), sizes)
    if shared_box:
        box = random_cell(rng, (6.0, 7.0, 5.0))
        cells = [box] * len(sizes)
    else:
        cells = [random_cell(rng, rng.uniform(2.0, 9.0, 3)) for _ in sizes]
        box = np.stack(cells)
    pos = np.concatenate([rng.uniform(-0.2, 1.2, (k, 3)) @ c for k, c in zip(sizes, cells, strict=True)])
    run_case(pos, batch, 3.5, 0.0, box=box, loop=True, dtype=dtype)
    run_case(pos, batch, 3.5, 0.7, box=box, loop=False, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pbc", [(True, False, True), (False, True, False), (False, False, True), (False, False, False)])
def test_mixed_pbc(dtype, pbc):
    """Slabs and wires: periodic along some lattice vectors only, with per-system cells, atoms
    spread well outside the cell along the open directions."""
    rng = np.random.default_rng(sum(pbc))
    cells = [random_cell(rng, (5.0, 2.2, 6.0)), random_cell(rng, (3.0, 8.0, 4.0))]
    sizes = [40, 30]
    pos = np.concatenate([rng.uniform(-1.0, 2.0, (k, 3)) @ c for k, c in zip(sizes, cells, strict=True)])
    batch = np.repeat([0, 1], sizes)
    nl, _ = run_case(pos, batch, 3.0, 0.0, box=np.stack(cells), loop=False, pbc=pbc, dtype=dtype)
    for k in range(3):
        if not pbc[k]:
            assert bool((nl.image[:, k] == 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loop", [False, True])
def test_open_boundaries(dtype, loop):
    rng = np.random.default_rng(3)
    sizes = [20, 3, 50, 1, 17]
    batch = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.concatenate([rng.normal(0.0, 2.5, (k, 3)) + rng.uniform(-100, 100, 3) for k in sizes])
    pos[25] = pos[24]  # two atoms at the same place: a pair at distance 0
    nl, ref = run_case(pos, batch, 4.0, 0.0, box=None, loop=loop, dtype=dtype)
    assert (24, 25, (0, 0, 0)) in ref
    run_case(pos, batch, 4.0, 1.5, box=None, loop=loop, dtype=dtype)
    assert bool((nl.image == 0).all())


def test_sparse_open_system():
    """Atoms far apart (a huge, mostly empty bin grid): must stay fast and correct."""
    rng = np.random.default_rng(11)
    pos = np.concatenate([rng.normal(0, 1.5, (20, 3)), rng.normal(0, 1.5, (20, 3)) + 1e7, [[-5e6, 3e6, 1e6]]])
    run_case(pos, np.zeros(len(pos), int), 3.0)


def test_atoms_outside_cell():
    rng = np.random.default_rng(5)
    cell = random_cell(rng, (4.0, 5.0, 4.5))
    frac = rng.uniform(0, 1, (30, 3)) + rng.integers(-2, 3, (30, 3))
    run_case(frac @ cell, np.zeros(30, int), 3.0, box=cell, loop=True)


def test_atoms_far_outside_cell():
    """Translating atoms by lattice vectors (up to 10^4 cells) changes only the images."""
    rng = np.random.default_rng(6)
    cell = torch.tensor(random_cell(rng, (6.0, 5.0, 7.0)))
    pos = torch.rand(60, 3, dtype=torch.float64) @ cell
    shift = torch.randint(-10_000, 10_000, (60, 3))
    moved = pos + shift.double() @ cell
    batch = torch.zeros(60, dtype=torch.long)
    a = neighbor_list(pos, batch, 4.0, box=cell)
    b = neighbor_list(moved, batch, 4.0, box=cell)
    check_structure(b, moved, batch, cell, 4.0, 0.0, False)
    i, j = b.edge_index
    image_a = b.image - shift[i] + shift[j]
    key_a = sorted(zip(a.edge_index[0].tolist(), a.edge_index[1].tolist(), map(tuple, a.image.tolist()), strict=True))
    key_b = sorted(zip(i.tolist(), j.tolist(), map(tuple, image_a.tolist()), strict=True))
    assert key_a == key_b
    assert torch.equal(a.edge_index, b.edge_index)
    torch.testing.assert_close(b.edge_weight, a.edge_weight, atol=1e-8, rtol=0)


def test_chunked_expansion(monkeypatch):
    """Force the candidate expansion through many small chunks."""
    monkeypatch.setattr(nbmod, "_CHUNK", 257)
    rng = np.random.default_rng(2)
    cell = random_cell(rng, (9.0, 8.0, 10.0))
    pos = rng.uniform(0, 1, (200, 3)) @ cell
    run_case(pos, np.zeros(200, int), 3.0, 0.5, box=cell)
    run_case(pos, np.zeros(200, int), 3.0, 0.5)


def test_unpacked_sort_fallback(monkeypatch):
    """Images too large for the packed sort key: the successive stable sorts give the same."""
    rng = np.random.default_rng(9)
    cell = random_cell(rng, (2.5, 3.0, 2.0))
    pos = rng.uniform(-1, 2, (20, 3)) @ cell
    packed, _ = run_case(pos, np.zeros(20, int), 3.0, 0.3, box=cell, loop=True)
    monkeypatch.setattr(nbmod, "_MAX_KEY", 1)
    unpacked, _ = run_case(pos, np.zeros(20, int), 3.0, 0.3, box=cell, loop=True)
    for x, y in zip(packed, unpacked, strict=True):
        assert torch.equal(x, y)


def test_many_small_molecules_vectorised():
    rng = np.random.default_rng(4)
    n_mol, n_at = 300, 6
    pos = rng.normal(0, 1.2, (n_mol * n_at, 3))
    batch = np.repeat(np.arange(n_mol), n_at)
    run_case(pos, batch, 2.5)
    box = np.stack([random_cell(rng, rng.uniform(2.0, 6.0, 3)) for _ in range(n_mol)])
    run_case(pos, batch, 2.5, box=box)


def test_empty_and_single():
    pos = torch.zeros(0, 3)
    nl = neighbor_list(pos, torch.zeros(0, dtype=torch.long), 5.0, loop=True)
    assert nl.edge_index.shape == (2, 0) and nl.edge_vec.shape == (0, 3) and nl.image.shape == (0, 3)
    nl = neighbor_list(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), 5.0, loop=True)
    assert nl.edge_index.tolist() == [[0], [0]]
    nl = neighbor_list(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), 5.0, box=torch.eye(3) * 10)
    assert nl.edge_index.shape == (2, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_distances_exactly_at_cutoffs(dtype):
    """A simple cubic lattice (spacing 1, exact in binary): d == cutoff_upper is excluded,
    d == cutoff_lower is included."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3).to(dtype)
    box = torch.eye(3, dtype=dtype) * 3.0
    batch = torch.zeros(27, dtype=torch.long)
    assert neighbor_list(grid, batch, 1.0, box=box).edge_index.shape[1] == 0
    nl = neighbor_list(grid, batch, 1.2, 1.0, box=box)
    assert nl.edge_index.shape[1] == 27 * 6
    assert bool((nl.edge_weight == 1.0).all())
    assert neighbor_list(grid, batch, 1.5, 1.0 + 1e-6, box=box).edge_index.shape[1] == 27 * 12


def test_loop_ignores_cutoff_lower_like_torchmdnet():
    """TorchMD-Net's OptimizedDistance(loop=True) keeps self loops even when cutoff_lower > 0."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [2.0, 0.0, 0.0]])
    nl = neighbor_list(pos, torch.zeros(3, dtype=torch.long), 3.0, 1.0, loop=True)
    pairs = list(zip(*nl.edge_index.tolist(), strict=True))
    assert pairs == [(0, 0), (0, 2), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_box_forms():
    """(3, 3), (1, 3, 3) and a per-system stack of the same cell agree; a float64 box works with
    float32 positions (and gets gradients through the cast); pbc all False means open."""
    rng = np.random.default_rng(10)
    cell = torch.tensor(random_cell(rng, (5.0, 6.0, 5.5)))
    pos = torch.rand(40, 3, dtype=torch.float64) @ cell
    batch = torch.tensor([0] * 25 + [1] * 15)
    ref = neighbor_list(pos, batch, 3.0, box=cell)
    for box in (cell[None], cell.expand(2, 3, 3), cell.expand(5, 3, 3)):
        out = neighbor_list(pos, batch, 3.0, box=box)
        for x, y in zip(ref, out, strict=True):
            assert torch.equal(x, y)
    box64 = cell.clone().requires_grad_()
    nl32 = neighbor_list(pos.float(), batch, 3.0, box=box64)
    assert nl32.edge_vec.dtype == torch.float32
    assert torch.equal(nl32.edge_index, ref.edge_index)
    (g,) = torch.autograd.grad(nl32.edge_weight.sum(), box64)
    assert g.dtype == torch.float64 and bool(torch.isfinite(g).all()) and bool((g != 0).any())
    open_ = neighbor_list(pos, batch, 3.0, box=cell, pbc=(False, False, False))
    free = neighbor_list(pos, batch, 3.0)
    for x, y in zip(open_, free, strict=True):
        assert torch.equal(x, y)


def test_deterministic():
    rng = np.random.default_rng(8)
    cell = random_cell(rng, (7.0, 6.0, 8.0))
    pos = torch.tensor(rng.uniform(0, 1, (80, 3)) @ cell)
    a = neighbor_list(pos, torch.zeros(80, dtype=torch.long), 3.0, box=torch.tensor(cell))
    b = neighbor_list(pos, torch.zeros(80, dtype=torch.long), 3.0, box=torch.tensor(cell))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


# --------------------------------------------------------------------------------------
# against TorchMD-Net


def _tmdnet_pairs(ei, ev):
    ei = ei.tolist()
    return {(a, b): v for a, b, v in zip(ei[0], ei[1], ev.double().tolist(), strict=True)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torchmdnet_open(dtype):
    utils = pytest.importorskip("torchmdnet.models.utils")
    g = torch.Generator().manual_seed(1)
    sizes = [12, 7, 20]
    batch = torch.arange(3).repeat_interleave(torch.tensor(sizes))
    pos = (torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64) * 2.0).to(dtype)
    for cl, loop in [(0.0, True), (0.8, False), (0.8, True)]:
        od = utils.OptimizedDistance(cutoff_lower=cl, cutoff_upper=4.5, loop=loop, return_vecs=True, max_num_pairs=-64)
        ei, ew, ev = od(pos, batch)
        nl = neighbor_list(pos, batch, 4.5, cl, loop=loop)
        theirs = _tmdnet_pairs(ei, ev)
        ours = _tmdnet_pairs(nl.edge_index, nl.edge_vec)
        assert set(theirs) == set(ours)
        for k in theirs:
            np.testing.assert_allclose(ours[k], theirs[k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strategy, triclinic", [("brute", True), ("brute", False), ("cell", False)])
def test_against_torchmdnet_periodic(dtype, strategy, triclinic):
    """A box at least 2 cutoffs wide, in TorchMD-Net's reduced triclinic form (its "cell"
    strategy only handles rectangular boxes correctly, so it gets an orthorhombic one): the
    minimum image convention holds, so both must find the same pairs (one image each)."""
    utils = pytest.importorskip("torchmdnet.models.utils")
    g = torch.Generator().manual_seed(2)
    if triclinic:
        box = torch.tensor([[12.0, 0.0, 0.0], [3.0, 11.0, 0.0], [-2.5, 4.0, 13.0]], dtype=torch.float64)
    else:
        box = torch.diag(torch.tensor([12.0, 11.0, 13.0], dtype=torch.float64))
    frac = torch.rand(150, 3, generator=g, dtype=torch.float64)
    pos = (frac @ box).to(dtype)
    box = box.to(dtype)
    batch = torch.zeros(150, dtype=torch.long)
    od = utils.OptimizedDistance(
        cutoff_lower=0.0, cutoff_upper=5.0, loop=False, return_vecs=True, max_num_pairs=-150,
        strategy=strategy, box=box,
    )
    ei, ew, ev = od(pos, batch)
    nl = neighbor_list(pos, batch, 5.0, box=box)
    theirs = _tmdnet_pairs(ei, ev)
    ours = _tmdnet_pairs(nl.edge_index, nl.edge_vec)
    assert len(ours) == nl.edge_index.shape[1]  # one image per pair in a box this large
    assert set(theirs) == set(ours)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------
# gradients


def _small_periodic_system():
    rng = np.random.default_rng(12)
    cell = random_cell(rng, (3.2, 3.6, 3.4))  # thinner than the cutoff: many images, self images
    frac = rng.uniform(-0.3, 1.3, (5, 3))
    pos = torch.tensor(frac @ cell, dtype=torch.float64)
    box = torch.tensor(cell, dtype=torch.float64)
    return pos, box


@pytest.mark.parametrize("loop", [False, True])
def test_gradcheck_pos_and_box(loop):
    pos, box = _small_periodic_system()
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    cu = 4.0
    # the pair set must not change under the finite-difference steps
    w = neighbor_list(pos, batch, cu, 0.5, box=box, loop=loop).edge_weight
    assert bool(((w - cu).abs() > 1e-3).all()) and bool(((w - 0.5).abs() > 1e-3).all())

    def f(p, b):
        nl = neighbor_list(p, batch, cu, 0.5, box=b, loop=loop)
        return nl.edge_vec, nl.edge_weight

    assert torch.autograd.gradcheck(f, (pos.requires_grad_(), box.requires_grad_()), eps=1e-6, atol=1e-7)


def test_gradcheck_per_system_boxes():
    pos, box = _small_periodic_system()
    pos2 = pos.clone() * 1.1
    p = torch.cat([pos, pos2]).requires_grad_()
    b = torch.stack([box, box * 1.1 + 0.05]).requires_grad_()
    batch = torch.tensor([0] * 5 + [1] * 5)

    # a cutoff with no pair within 1e-3 of it (the pair set must not change under the steps)
    w = neighbor_list(p, batch, 4.0, box=b, pbc=(True, False, True)).edge_weight
    cu = next(c for c in np.arange(3.0, 3.5, 0.01) if bool(((w - c).abs() > 1e-3).all()))

    def f(p, b):
        nl = neighbor_list(p, batch, cu, box=b, pbc=(True, False, True), loop=True)
        return nl.edge_vec, nl.edge_weight

    assert torch.autograd.gradcheck(f, (p, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_loop_gradient_is_zero(dtype):
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.3, 1.2, 2.0]], dtype=dtype, requires_grad=True)
    box = (torch.eye(3, dtype=dtype) * 6.0).requires_grad_()
    nl = neighbor_list(pos, torch.zeros(3, dtype=torch.long), 3.0, box=box, loop=True)
    is_loop = (nl.edge_index[0] == nl.edge_index[1]) & (nl.image == 0).all(dim=1)
    assert int(is_loop.sum()) == 3
    gp, gb = torch.autograd.grad(nl.edge_weight[is_loop].sum(), (pos, box), retain_graph=True, materialize_grads=True)
    assert torch.equal(gp, torch.zeros_like(gp)) and torch.equal(gb, torch.zeros_like(gb))
    gp, gb = torch.autograd.grad(nl.edge_weight.sum(), (pos, box), materialize_grads=True)
    assert bool(torch.isfinite(gp).all()) and bool(torch.isfinite(gb).all())
    # two atoms on top of each other (a real pair of length 0): finite, zero gradient
    p2 = torch.zeros(2, 3, dtype=dtype, requires_grad=True)
    nl = neighbor_list(p2, torch.zeros(2, dtype=torch.long), 1.0)
    assert nl.edge_index.shape[1] == 2
    (g,) = torch.autograd.grad(nl.edge_weight.sum(), p2)
    assert torch.equal(g, torch.zeros_like(g))


# --------------------------------------------------------------------------------------
# bad input


def _args():
    return torch.rand(4, 3), torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize(
    "box, match",
    [
        (torch.zeros(3, 3), "box is singular"),
        (torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0]]), "box is singular"),
        (torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1]]), "box is singular"),
        (torch.stack([torch.eye(3), torch.zeros(3, 3)]), r"box is singular.*system 1"),
        (torch.eye(3)[:2], "box must have shape"),
        (torch.ones(3, 4), "box must have shape"),
        (torch.ones(2, 2, 3, 3), "box must have shape"),
        (torch.eye(3).expand(2, 3, 3).clone(), "2 systems|n_systems"),
        (torch.full((3, 3), float("nan")), "non-finite"),
    ],
)
def test_bad_box(box, match):
    pos, batch = _args()
    if match.startswith("2 systems"):
        batch = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match=match):
        neighbor_list(pos, batch, 2.0, box=box)


@pytest.mark.parametrize(
    "cu, cl, match",
    [
        (0.0, 0.0, "cutoff_upper"),
        (-1.0, -2.0, "cutoff_upper"),
        (float("nan"), 0.0, "cutoff_upper"),
        (2.0, 2.0, "cutoff_lower"),
        (2.0, 3.0, "cutoff_lower"),
    ],
)
def test_bad_cutoffs(cu, cl, match):
    pos, batch = _args()
    with pytest.raises(ValueError, match=match):
        neighbor_list(pos, batch, cu, cl)


def test_bad_other_inputs():
    pos, batch = _args()
    with pytest.raises(ValueError, match="box is too thin"):
        neighbor_list(pos, batch, 5.0, box=torch.diag(torch.tensor([1.0, 1.0, 1e-6])))
    with pytest.raises(ValueError, match="pbc must have 3 entries"):
        neighbor_list(pos, batch, 2.0, box=torch.eye(3), pbc=(True, False))
    with pytest.raises(ValueError, match="requires a box"):
        neighbor_list(pos, batch, 2.0, pbc=(True, False, False))
    with pytest.raises(ValueError, match="pos must be"):
        neighbor_list(torch.rand(4, 2), batch, 2.0)
    with pytest.raises(ValueError, match="batch must"):
        neighbor_list(pos, batch[:3], 2.0)
    with pytest.raises(ValueError, match="non-finite"):
        neighbor_list(torch.full((4, 3), float("inf")), batch, 2.0)


@pytest.mark.parametrize("kind", ["molecules", "triclinic", "tiny-cell", "boxes"])
def test_half_list_is_the_canonical_half_of_the_full_list(kind):
    """half=True: exactly the full list's edges with i < j, or i == j and a lexicographically
    positive image (an atom's own images in a thin cell), in the full list's order, with the same
    vectors and lengths; on both search paths (the fixture), so every search gives the same list."""
    rng = np.random.default_rng(7)
    box = None
    if kind == "molecules":
        pos = rng.normal(size=(30, 3)) * 2
        batch = np.repeat([0, 1, 2], [9, 14, 7])
    elif kind == "boxes":
        cells = np.stack([random_cell(rng, (7.0, 6.0, 8.0)), random_cell(rng, (6.5, 7.5, 6.0))])
        batch = np.repeat([0, 1], [20, 25])
        pos = np.einsum("nk,nkl->nl", rng.uniform(0, 1, (45, 3)), cells[batch])
        box = cells
    else:
        lengths = (1.7, 2.5, 1.2) if kind == "tiny-cell" else (7.0, 6.5, 8.0)
        box = random_cell(rng, lengths)
        pos = rng.uniform(-0.5, 1.5, (6 if kind == "tiny-cell" else 40, 3)) @ box
        batch = np.zeros(len(pos), int)
    pos_t, batch_t = torch.tensor(pos), torch.tensor(batch)
    box_t = None if box is None else torch.tensor(box)
    full = neighbor_list(pos_t, batch_t, 3.0, 0.4, box=box_t)
    half = neighbor_list(pos_t, batch_t, 3.0, 0.4, box=box_t, half=True)
    i, j = full.edge_index
    x, y, z = full.image.unbind(1)
    positive = (x > 0) | ((x == 0) & ((y > 0) | ((y == 0) & (z > 0))))
    keep = (i < j) | ((i == j) & positive)
    assert 2 * int(keep.sum()) == i.shape[0]
    for name, got, expected in zip(NeighborList._fields, half, (full.edge_index[:, keep], full.edge_vec[keep],
                                                                full.edge_weight[keep], full.image[keep]), strict=True):
        assert torch.equal(got, expected), name
    if kind == "tiny-cell":
        assert bool((half.edge_index[0] == half.edge_index[1]).any())  # an atom's own images, once per pair


def test_half_list_takes_no_self_loops():
    with pytest.raises(ValueError, match="half=True.*no self loops"):
        neighbor_list(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 2.0, loop=True, half=True)


def test_small_open_systems_take_the_all_pairs_path(search_path, monkeypatch):
    """A batch of small molecules (consecutive systems) is searched by all pairs, unless a
    system is too large or the batch is not in system order; every path gives the same list."""
    calls = []
    original = nbmod._search
    monkeypatch.setattr(nbmod, "_search", lambda *a: calls.append(1) or original(*a))
    gen = torch.Generator().manual_seed(5)
    pos = torch.randn(40, 3, generator=gen, dtype=torch.float64) * 2
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([7, 13, 1, 19]))
    result = neighbor_list(pos, batch, 2.5, 0.3, loop=True)
    assert calls == ([] if search_path == "all-pairs" else [1])
    expected = reference(pos.numpy(), batch.numpy(), 2.5, 0.3, loop=True)
    got = {(int(i), int(j), (0, 0, 0)) for i, j in result.edge_index.T}
    assert got == set(expected) and len(got) == result.edge_index.shape[1]
    shuffled = batch.flip(0)  # not in system order: the cell list
    calls.clear()
    flipped = neighbor_list(pos, shuffled, 2.5, 0.3, loop=True)
    assert calls == [1]
    assert {(int(i), int(j), (0, 0, 0)) for i, j in flipped.edge_index.T} == set(
        reference(pos.numpy(), shuffled.numpy(), 2.5, 0.3, loop=True))
