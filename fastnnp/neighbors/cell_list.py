"""Neighbour pairs within a cutoff: an O(N) cell list written in plain torch.

Conventions (TorchMD-Net's, which the models rely on)
-----------------------------------------------------
* Both directions of every pair are listed. ``edge_index[0]`` is the receiving atom ``i``,
  ``edge_index[1]`` the sender ``j``.
* ``edge_vec = pos[i] - pos[j] - image @ box[system]``: the vector from the periodic image of
  ``j`` to ``i``; ``image`` [E, 3] (int64) is the lattice translation, in units of the box
  rows, applied to the sender. ``edge_weight = |edge_vec|``.
* A pair is kept when ``cutoff_lower <= edge_weight < cutoff_upper`` (tested on the returned,
  rounded values, so the output always satisfies it exactly).
* ``loop=True`` adds exactly one self loop ``(i, i)``, image 0, length 0, per atom. Like
  TorchMD-Net's ``OptimizedDistance(..., loop=True)`` the self loops are kept even when
  ``cutoff_lower > 0`` (the lower cutoff only filters pairs of distinct atoms / images).
  Periodic images of an atom itself (``i -> i`` with a non-zero image, which exist when the
  cell is thinner than the cutoff) are ordinary neighbours and are listed whatever ``loop``.
* Edges are sorted by receiver, then sender, then image (lexicographic), so the list is in
  CSR order by receiver and deterministic.
* ``half=True`` lists each unordered pair once instead, for models that compute a pair's work
  once for both directions: as (i, j, image) with i < j, or i == j and the image
  lexicographically positive (an atom's own periodic images), sorted by (i, j, image), so
  every search of the same pairs gives the same list. Self loops are then not allowed
  (``loop=False``).
* ``edge_vec`` / ``edge_weight`` are differentiable with respect to ``pos`` and ``box``; the
  gradient of the length of a zero-length edge (a self loop) is 0.

Boxes
-----
``box`` is None (open boundaries), a (3, 3) tensor shared by all systems (also accepted as
(1, 3, 3)) or (n_systems, 3, 3), one per system, where ``n_systems > batch.max()``. Rows are
the lattice vectors a, b, c. Any non-singular cell works (:func:`.checks.singular_cells`):
arbitrary triclinic, either handedness, thinner than twice the cutoff or even than the cutoff
(then an atom sees several images of the same neighbour). ``pbc`` gives the periodicity per
lattice vector (default: all periodic when a box is given), so slabs and wires are supported.
Atoms may lie anywhere, inside the cell or not: they are wrapped internally and the returned
images refer to the positions as given.

Algorithm
---------
Pair indices and integer images are found under ``no_grad`` (:func:`_search`, one function per
step below); the vectors are then recomputed from the caller's tensors with differentiable ops
(:mod:`.edges`).

1. :func:`_frame`: fractional coordinates ``f = pos @ box^-1`` (float64); periodic axes are
   wrapped into [0, 1) and the integer part is remembered as the atom's own lattice shift
   (:func:`.cells.cell_frame`); the search cutoffs get a margin that covers rounding.
2. :func:`_bin_sizes`: each system is cut into bins along the lattice directions, with a
   width (measured perpendicular to the faces, i.e. in units of the cell height
   h_k = V / |b x c| etc.) of at least cutoff / 2: periodic axes get
   n_k = max(1, floor(2 h_k / cutoff)) bins tiling the cell, open axes bins spanning the
   atoms' extent. Two atoms closer than the cutoff are then at most m_k = ceil(cutoff n_k / h_k)
   bins apart along k (2, or more when the cell is thinner than half the cutoff), in the
   infinite periodic bin lattice.
3. :func:`_grid`: atoms are sorted by a global bin key ((system, bx, by, bz), z fastest), so
   the atoms of a run of consecutive z bins form one contiguous range (:mod:`.cells`).
   :func:`_candidate_ranges`: for every bin column offset (o0, o1) in one half of the plane,
   the sender range of each occupied bin is the run of bins z - m .. z + m of the target
   column, split where it crosses the periodic z boundary (each piece has its own image); the
   range bounds come from a dense prefix count over the bin grid (or a binary search when the
   grid is much larger than the atom count). Column (0, 0) takes z offsets 0 .. m only, and in
   the own bin only senders after the receiver, so every pair is produced once; the reverse
   direction comes from mirroring.
4. :func:`_expand_and_filter`: the ranges are expanded into candidate pairs in bounded chunks
   (float32 arithmetic for float32 input, float64 otherwise) and filtered with a cutoff
   enlarged by a small margin that covers rounding. :func:`neighbor_list` then filters the
   survivors exactly on the returned (input dtype) lengths (:func:`.edges.within_cutoffs`),
   mirrors them (the two directions get bit-identical lengths), adds the self loops and sorts
   by a single packed int64 key (:func:`_mirror_and_sort`).

Open systems of at most :data:`ALL_PAIRS_ATOMS` atoms each (a batch's systems one after
another) skip steps 1-4: every pair of the same system is a candidate for the exact filter
(O(Σ n_s²), at most ``_CHUNK`` candidates, a dozen ops: small molecules are bound by the cell
list's op count, not its work).

Work and memory are O(N + E): about 3.7 candidates per kept pair for dense systems, no
array over all bins x all atoms, no neighbour cap. All systems of a batch are processed
together (no Python loop over systems or atoms; the Python loops run over bin offsets only).
"""

from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .cells import bin_coords, bin_starts, cell_frame, sort_into_bins
from .checks import check_search_inputs
from .edges import edge_vectors, safe_norm, within_cutoffs

# Open systems of at most this many atoms (stored one after another in a batch) test every pair
# of the same system, at most _CHUNK candidates in all (a dozen ops; the cell list costs ~200
# small ops, which dominate a call on a small molecule).
ALL_PAIRS_ATOMS = 256
# Largest number of candidate pairs expanded at once (bounds the peak memory of the search).
_CHUNK = 1 << 21
# Bins per cutoff: bins are at least cutoff / _SUB wide, neighbours are searched _SUB bins away.
_SUB = 2
# Bins per axis are capped so that keys fit in int64 (only reached by absurdly sparse input).
_MAX_BINS_PER_AXIS = 1 << 20
_MAX_TOTAL_BINS = 1 << 62
# Refuse (nearly degenerate) cells that need more bin offsets than this.
_MAX_OFFSETS = 1_000_000
# Edges are sorted by one packed int64 key when it fits below this bound.
_MAX_KEY = 1 << 62


class NeighborList(NamedTuple):
    """Pairs sorted by receiver (``half=True``: each pair once, unsorted). edge_index [2, E]
    int64, edge_vec [E, 3], edge_weight [E], image [E, 3] int64 lattice translation applied to
    the sender."""

    edge_index: Tensor
    edge_vec: Tensor
    edge_weight: Tensor
    image: Tensor


def neighbor_list(
    pos: Tensor,
    batch: Tensor,
    cutoff_upper: float,
    cutoff_lower: float = 0.0,
    box: Optional[Tensor] = None,
    loop: bool = False,
    pbc: Optional[Sequence[bool]] = None,
    half: bool = False,
) -> NeighborList:
    """All pairs with ``cutoff_lower <= d < cutoff_upper`` (conventions: module docstring).

    Args:
        pos: [N, 3] positions (floating point).
        batch: [N] integer system index of every atom (no pairs across systems).
        cutoff_upper: exclusive upper distance cutoff, > 0.
        cutoff_lower: inclusive lower distance cutoff, < cutoff_upper (self loops ignore it).
        box: None, (3, 3) or (n_systems, 3, 3) lattice vectors as rows.
        loop: add one self loop (length 0, image 0) per atom.
        pbc: periodicity along each lattice vector, three booleans; default all True when a
            box is given. Any True entry needs a box.
        half: one direction of every pair, unsorted (module docstring); needs ``loop=False``.

    Raises:
        ValueError: bad shapes, singular or non-finite box, bad cutoffs, non-finite positions,
            ``half`` with ``loop``.
    """
    if half and loop:
        raise ValueError("half=True lists each pair of distinct atoms or images once; it takes no self loops (loop=False)")
    pos, batch, box, periodic, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, pbc)
    n = pos.shape[0]
    if box is not None and not any(periodic):
        box = None  # nothing periodic: open boundaries (the box only had to be valid)
    boxc = None if box is None else box.to(pos.dtype)

    with torch.no_grad():
        # One direction of every pair (original atom indices, image of the sender).
        pairs = _all_pairs(batch) if box is None else None
        i, j, image = _search(pos, batch, box, periodic, cu, cl) if pairs is None else pairs
        # Exact filter on the very values that will be returned (the search used a slightly
        # larger cutoff). Both directions get bit-identical lengths, so filter before mirroring.
        if i.numel() > 0:
            keep = within_cutoffs(pos.detach(), None if boxc is None else boxc.detach(), batch, i, j, image, cl, cu)
            if not bool(keep.all()):
                sel = keep.nonzero().squeeze(1)
                i, j, image = i.index_select(0, sel), j.index_select(0, sel), image.index_select(0, sel)
            del keep
        if half:
            # the all-pairs candidates are i < j in (i, j) order already
            edge_index, image = (torch.stack((i, j)), image) if pairs is not None else _canonical_half(i, j, image)
        else:
            pairs = [i, j, image]
            del i, j
            edge_index, image = _mirror_and_sort(pairs, n, loop)

    edge_vec = edge_vectors(pos, boxc, batch, edge_index[0], edge_index[1], image)
    edge_weight = safe_norm(edge_vec)
    return NeighborList(edge_index, edge_vec, edge_weight, image)


# --------------------------------------------------------------------------------------
# the cell-list search (no grad): _search runs the stages below in order


class _Frame(NamedTuple):
    """Step 1: the atoms in the lattice frame (float64) and the search cutoffs."""

    frac: Tensor  # [N, 3] fractional coordinates, wrapped into [0, 1) along periodic axes
    #               (the positions themselves for open boundaries)
    shift: Tensor  # [N, 3] int64 lattice shift removed by the wrapping
    wrapped: Tensor  # [N, 3] positions minus shift @ box
    boxes: Optional[Tensor]  # [S, 3, 3] cell of every system; None for open boundaries
    shared_box: Optional[Tensor]  # (3, 3) cell when one box is shared by all systems
    heights: Tensor  # [S, 3] cell heights (1 for open boundaries)
    periodic: Tensor  # [3] bool
    cutoff: float  # search cutoffs, enlarged by the rounding margin
    cutoff_lower: float
    dtype: torch.dtype  # dtype of the candidate distances


class _BinSizes(NamedTuple):
    """Step 2: the bin grid of every system ([S, 3] float64)."""

    nbins: Tensor  # bins per axis
    width: Tensor  # bin width, fractional units
    reach: Tensor  # m: how many bins apart two atoms within the search cutoff can be
    origin: Tensor  # fractional coordinate of the grid's first bin edge


class _Grid(NamedTuple):
    """Step 3: atoms sorted by bin, and the occupied bins (B of them, in key order)."""

    order: Tensor  # [N] sorted index -> original atom index
    sorted_key: Tensor  # [N] global bin key of each sorted atom
    atom_bin: Tensor  # [N] occupied bin of each sorted atom
    count: Tensor  # [B] atoms per occupied bin
    start: Tensor  # [B] first sorted atom of each occupied bin
    sys: Tensor  # [B] system of each occupied bin
    coord: Tensor  # [B, 3] int64 bin coordinates
    nbins: Tensor  # [B, 3] int64 bins per axis of the bin's system
    reach: Tensor  # [B, 3] int64 m of the bin's system
    base: Tensor  # [B] first global bin key of the bin's system
    first_atom: Optional[Tensor]  # [n_bins + 1] dense prefix count over all bins, or None
    n_bins: int  # bins of all systems together
    max_reach: List[int]  # largest m per axis
    uniform_reach: bool  # every occupied bin has the largest m


class _Ranges(NamedTuple):
    """Candidate ranges ("entries"): receiver (sorted index), senders start .. start + count - 1
    (sorted indices), bin image of the senders [R, 3] int64."""

    receiver: Tensor
    start: Tensor
    count: Tensor
    image: Tensor


def _search(
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor],
    periodic: List[bool],
    cu: float,
    cl: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of every pair within a slightly enlarged cutoff: (i, j, image) with
    original atom indices; the caller filters exactly, mirrors and sorts."""
    device = pos.device
    if pos.shape[0] == 0:
        return _no_pairs(device)
    frame = _frame(pos, batch, box, periodic, cu, cl)
    grid = _grid(frame, _bin_sizes(frame, batch), batch, cu)
    ranges = _candidate_ranges(grid, periodic)
    if ranges is None:
        return _no_pairs(device)
    out_i, out_j, out_img = _expand_and_filter(frame, grid, ranges)
    del ranges
    i = torch.cat(out_i)
    del out_i
    j = torch.cat(out_j)
    del out_j
    image = torch.cat(out_img)
    return i, j, image


def _all_pairs(batch: Tensor) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """Every pair i < j of the same system (open boundaries: image 0), as candidates for the
    exact filter; None (use the cell list) unless each system is at most ALL_PAIRS_ATOMS
    consecutive atoms and there are at most _CHUNK candidates."""
    device = batch.device
    if batch.shape[0] == 0:
        return _no_pairs(device)
    sizes = torch.bincount(batch)
    largest = int(sizes.max())
    if largest > ALL_PAIRS_ATOMS or sizes.shape[0] * largest * (largest - 1) // 2 > _CHUNK:
        return None
    if not bool((batch[1:] >= batch[:-1]).all()):
        return None
    a, b = torch.triu_indices(largest, largest, 1, device=device)
    starts = (torch.cumsum(sizes, 0) - sizes)[:, None]
    inside = b[None, :] < sizes[:, None]  # [S, pairs of the largest system]
    i, j = (starts + a)[inside], (starts + b)[inside]
    return i, j, torch.zeros(i.shape[0], 3, dtype=torch.long, device=device)


def _no_pairs(device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """Empty (i, j, image)."""
    e = torch.zeros(0, dtype=torch.long, device=device)
    return e, e, torch.zeros(0, 3, dtype=torch.long, device=device)


def _frame(pos: Tensor, batch: Tensor, box: Optional[Tensor], periodic: List[bool], cu: float, cl: float) -> _Frame:
    """Step 1: fractional coordinates wrapped along the periodic axes, cell heights, and the
    search cutoffs enlarged by a margin that covers the rounding of the search (float32 or
    float64) and of the returned (input dtype) distances."""
    device = pos.device
    f64 = torch.float64
    p = pos.detach().to(f64)
    # Candidate distances are computed in float32 for float32 (or narrower) input.
    sdt = f64 if pos.dtype == f64 else torch.float32
    n_sys = int(batch.max()) + 1
    per = torch.tensor(periodic, dtype=torch.bool, device=device)
    if box is None:
        boxes = shared_box = None
        frac, shift, wrapped = p, torch.zeros(pos.shape[0], 3, dtype=torch.long, device=device), p
        heights = torch.ones(n_sys, 3, dtype=f64, device=device)
        box_scale = 0.0
    else:
        b64 = box.detach().to(f64)
        cells = cell_frame(p, batch, b64, n_sys, batched=False, wrap=per)
        boxes, frac, shift, wrapped, heights = cells.boxes, cells.frac, cells.shift, cells.wrapped, cells.heights
        shared_box = b64 if b64.dim() == 2 else None
        box_scale = float(boxes.norm(dim=2).sum(dim=1).max())

    eps = max(torch.finfo(pos.dtype).eps, torch.finfo(sdt).eps)
    scale = float(p.abs().max()) + box_scale
    delta = 32.0 * eps * (4.0 * scale + 3.0 * cu) + 1e-9 * cu
    return _Frame(frac, shift, wrapped, boxes, shared_box, heights, per, cu + delta, max(cl - delta, 0.0), sdt)


def _bin_sizes(frame: _Frame, batch: Tensor) -> _BinSizes:
    """Step 2: bins of (perpendicular) width >= cutoff / _SUB; periodic axes tile the cell
    exactly, open axes span the system's extent."""
    n = batch.shape[0]
    per, heights, cs, frac = frame.periodic, frame.heights, frame.cutoff, frame.frac
    n_sys = heights.shape[0]
    # Extent of every system along the open axes (fractional units).
    idx3 = batch.unsqueeze(1).expand(n, 3)
    fmin = torch.zeros(n_sys, 3, dtype=frac.dtype, device=frac.device).scatter_reduce(
        0, idx3, frac, "amin", include_self=False
    )
    fmax = torch.zeros(n_sys, 3, dtype=frac.dtype, device=frac.device).scatter_reduce(
        0, idx3, frac, "amax", include_self=False
    )
    rng = torch.where(per, torch.ones_like(fmax), fmax - fmin)
    fmin = torch.where(per, torch.zeros_like(fmin), fmin)

    cap = _MAX_BINS_PER_AXIS
    while True:
        nb = torch.floor(rng * heights * _SUB / cs).clamp(1, cap)
        if float(nb.prod(dim=1).sum()) <= _MAX_TOTAL_BINS:
            break
        cap //= 2
    width = torch.where(per, 1.0 / nb, torch.maximum(rng / nb, cs / (_SUB * heights)))
    # m: how many bins apart two atoms closer than cs can be (_SUB unless a periodic cell is
    # thinner than cs / _SUB); open axes never need to look beyond their extent.
    m = torch.ceil(cs / (width * heights) * (1.0 - 1e-10)).clamp(min=1)
    m = torch.where(per, m, torch.minimum(m, nb - 1))
    return _BinSizes(nb, width, m, fmin)


def _grid(frame: _Frame, sizes: _BinSizes, batch: Tensor, cu: float) -> _Grid:
    """Step 3a: atoms sorted by global bin key, the occupied bins, and how to find the atom
    range of a run of bin keys. Raises ValueError for a cell so thin that the search would
    need more than _MAX_OFFSETS bin offsets."""
    n = batch.shape[0]
    device = batch.device
    nb_i, m_i = sizes.nbins.to(torch.long), sizes.reach.to(torch.long)
    binc = bin_coords(
        (frame.frac - sizes.origin.index_select(0, batch)) / sizes.width.index_select(0, batch), sizes.nbins, batch
    )
    binned = sort_into_bins(binc, nb_i, batch)
    order = binned.order
    ks = binned.key.index_select(0, order)
    _, cnt = torch.unique_consecutive(ks, return_counts=True)
    bstart = torch.cumsum(cnt, 0) - cnt
    atom_bin = torch.repeat_interleave(torch.arange(cnt.shape[0], device=device), cnt, output_size=n)
    first = order.index_select(0, bstart)
    bsys = batch.index_select(0, first)
    bm = m_i.index_select(0, bsys)
    # Atom range of a run of bin keys: a dense prefix count over all bins when the bin grid is
    # not much larger than the atom count, a binary search otherwise (_atom_range).
    total_bins = binned.n_bins
    first_atom = bin_starts(ks, total_bins) if total_bins <= 8 * n + 4096 else None

    mmax = [int(bm[:, k].max()) for k in range(3)]
    n_offsets = (2 * mmax[0] + 1) * (2 * mmax[1] + 1) * (2 * mmax[2] + 1)
    if n_offsets > _MAX_OFFSETS:
        raise ValueError(
            f"box is too thin for the cutoff: a cell height is {float(frame.heights.min()):.3g} for a cutoff "
            f"of {cu:.3g}, which needs {n_offsets} periodic images (more than {_MAX_OFFSETS})"
        )
    uniform_m = all(bool((bm[:, k] == mmax[k]).all()) for k in range(3))
    return _Grid(
        order, ks, atom_bin, cnt, bstart, bsys, binc.index_select(0, first), nb_i.index_select(0, bsys), bm,
        binned.base.index_select(0, bsys), first_atom, total_bins, mmax, uniform_m,
    )  # fmt: skip


def _atom_range(grid: _Grid, klo: Tensor, khi: Tensor) -> Tuple[Tensor, Tensor]:
    """Sorted atoms [start, end) of the bins with keys klo .. khi (inclusive)."""
    if grid.first_atom is not None:
        return (
            grid.first_atom.index_select(0, klo.clamp(0, grid.n_bins)),
            grid.first_atom.index_select(0, (khi + 1).clamp(0, grid.n_bins)),
        )
    return torch.searchsorted(grid.sorted_key, klo), torch.searchsorted(grid.sorted_key, khi, right=True)


class _Column(NamedTuple):
    """The target bin column (bin offset (o0, o1)) of every occupied bin."""

    key: Tensor  # [B] global key of the column's z bin 0
    image: Tensor  # [B, 3] int64 bin image of the column (z component 0)
    valid: Optional[Tensor]  # [B] bool, None when every bin has the column


class _ZPiece(NamedTuple):
    """One piece of the z run of a column, within one periodic image along c."""

    lo: Tensor  # [B] first z bin
    hi: Tensor  # [B] last z bin
    ok: Tensor  # [B] bool: the piece exists for the bin
    image_z: Optional[Tensor]  # [B] image along c; None for an open z axis


def _candidate_ranges(grid: _Grid, periodic: List[bool]) -> Optional[_Ranges]:
    """Step 3b: the candidate ranges of every atom, or None when there are none.

    Bin columns (o0, o1) in half of the plane; the column (0, 0) covers z offsets 0 .. m
    (offset 0: senders after the receiver in its own bin). Ranges are found per occupied bin,
    then given to each atom of the bin."""
    own_bin: List[_Ranges] = []
    per_bin: List[_Ranges] = []  # receiver = occupied bin
    for o0, o1 in _column_offsets(grid.max_reach):
        own = o0 == 0 and o1 == 0
        column = _column(grid, o0, o1, periodic)
        for k, piece in enumerate(_z_pieces(grid, own, column.valid, periodic[2])):
            start, end = _atom_range(grid, column.key + piece.lo, column.key + piece.hi)
            if own and k == 0:
                # The run starts with the receiver's own bin (image 0): only senders b > a.
                own_bin.append(_own_bin_ranges(grid, end))
                continue
            cb = torch.where(piece.ok, end - start, torch.zeros_like(start))
            sel = (cb > 0).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            im = column.image.index_select(0, sel)
            if piece.image_z is not None:
                im[:, 2] = piece.image_z.index_select(0, sel)
            per_bin.append(_Ranges(sel, start.index_select(0, sel), cb.index_select(0, sel), im))

    entries = own_bin + ([_bins_to_atoms(grid, per_bin)] if per_bin else [])
    del own_bin, per_bin
    ea = torch.cat([e.receiver for e in entries])
    if ea.numel() == 0:
        return None
    return _Ranges(
        ea,
        torch.cat([e.start for e in entries]),
        torch.cat([e.count for e in entries]),
        torch.cat([e.image for e in entries]),
    )


def _column_offsets(max_reach: List[int]) -> Iterator[Tuple[int, int]]:
    """Bin column offsets (o0, o1) of one half of the plane, (0, 0) first."""
    for o0 in range(0, max_reach[0] + 1):
        for o1 in range(-max_reach[1] if o0 > 0 else 0, max_reach[1] + 1):
            yield o0, o1


def _column(grid: _Grid, o0: int, o1: int, periodic: List[bool]) -> _Column:
    """The column at bin offset (o0, o1) of every occupied bin: periodic indices wrapped (the
    wrap count is the image), open columns off the grid or beyond a bin's m not valid."""
    bm, bn = grid.reach, grid.nbins
    valid = None if grid.uniform_reach else (bm[:, 0] >= o0) & (bm[:, 1] >= abs(o1))
    img = torch.zeros(bn.shape[0], 3, dtype=torch.long, device=bn.device)
    txy = []
    for k, o in ((0, o0), (1, o1)):
        t = grid.coord[:, k] + o
        if periodic[k]:
            img[:, k] = torch.div(t, bn[:, k], rounding_mode="floor")
            t = t - img[:, k] * bn[:, k]
        elif o != 0:
            inside = (t >= 0) & (t < bn[:, k])
            valid = inside if valid is None else valid & inside
        txy.append(t)
    return _Column(grid.base + (txy[0] * bn[:, 1] + txy[1]) * bn[:, 2], img, valid)


def _z_pieces(grid: _Grid, own: bool, valid: Optional[Tensor], periodic_z: bool) -> Iterator[_ZPiece]:
    """The z bins z - m .. z + m of a column (z .. z + m for the own column), split where a
    periodic index wraps; one piece per image along c (open z: one piece, clamped)."""
    z, nz_, mz = grid.coord[:, 2], grid.nbins[:, 2], grid.reach[:, 2]
    zl = z if own else z - mz
    zh = z + mz
    if periodic_z:
        i_first = torch.div(zl, nz_, rounding_mode="floor")
        i_last = torch.div(zh, nz_, rounding_mode="floor")
        span = i_last - i_first
        if valid is not None:
            span = span[valid]
        n_pieces = int(span.max()) + 1 if span.numel() > 0 else 0
    else:
        zl, zh = zl.clamp(min=0), torch.minimum(zh, nz_ - 1)
        n_pieces = 1
    for piece in range(n_pieces):
        if periodic_z:
            iz = i_first + piece
            ok = iz <= i_last
            base_z = iz * nz_
            lo = torch.maximum(zl, base_z) - base_z
            hi = torch.minimum(zh, base_z + nz_ - 1) - base_z
        else:
            iz = None
            ok = zl <= zh
            lo, hi = zl, zh
        if valid is not None:
            ok = ok & valid
        yield _ZPiece(lo, hi, ok, iz)


def _own_bin_ranges(grid: _Grid, end: Tensor) -> _Ranges:
    """Ranges of the run that starts with each atom's own bin (image 0): senders after the
    receiver up to ``end`` [B] of its bin's run."""
    n = grid.order.shape[0]
    ca = end.index_select(0, grid.atom_bin) - torch.arange(n, device=end.device) - 1
    sel = (ca > 0).nonzero().squeeze(1)
    image = torch.zeros(sel.shape[0], 3, dtype=torch.long, device=end.device)
    return _Ranges(sel, sel + 1, ca.index_select(0, sel), image)


def _bins_to_atoms(grid: _Grid, per_bin: List[_Ranges]) -> _Ranges:
    """Ranges found per occupied bin, given to every atom of the bin."""
    gb = torch.cat([g.receiver for g in per_bin])
    device = gb.device
    reps = grid.count.index_select(0, gb)
    tot = int(reps.sum())
    idx = torch.repeat_interleave(torch.arange(gb.shape[0], device=device), reps, output_size=tot)
    local = torch.arange(tot, device=device) - (torch.cumsum(reps, 0) - reps).index_select(0, idx)
    return _Ranges(
        grid.start.index_select(0, gb).index_select(0, idx) + local,
        torch.cat([g.start for g in per_bin]).index_select(0, idx),
        torch.cat([g.count for g in per_bin]).index_select(0, idx),
        torch.cat([g.image for g in per_bin]).index_select(0, idx),
    )


def _expand_and_filter(frame: _Frame, grid: _Grid, ranges: _Ranges) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    """Step 4: expand the ranges into candidate pairs, in chunks of at most about _CHUNK, and
    keep those within the search cutoffs. Returns the pieces of (i, j, image): original atom
    indices, image relative to the positions as given."""
    device = grid.order.device
    order, shift = grid.order, frame.shift
    ea, est, ecnt, eimg = ranges
    q, ps = _receivers_and_senders(frame, grid, ranges)

    cs2 = frame.cutoff * frame.cutoff
    cls2 = frame.cutoff_lower * frame.cutoff_lower
    csum = torch.cumsum(ecnt, 0)
    bounds = _chunk_bounds(csum)
    out_i: List[Tensor] = []
    out_j: List[Tensor] = []
    out_img: List[Tensor] = []
    for lo_e, hi_e in zip(bounds[:-1], bounds[1:], strict=True):
        off0 = int(csum[lo_e - 1]) if lo_e > 0 else 0
        incl = csum[lo_e:hi_e] - off0
        tot = int(incl[-1])
        nc = ecnt[lo_e:hi_e]
        b = torch.repeat_interleave(est[lo_e:hi_e] - (incl - nc), nc, output_size=tot)
        b += torch.arange(tot, device=device)
        dv = torch.repeat_interleave(q[lo_e:hi_e], nc, dim=0, output_size=tot)
        dv -= ps.index_select(0, b)
        d2 = dv.square_().sum(dim=1)
        del dv
        keep = d2 < cs2
        if cls2 > 0:
            keep &= d2 >= cls2
        sel = keep.nonzero().squeeze(1)
        del d2, keep
        ent = torch.searchsorted(incl, sel, right=True) + lo_e
        # back to original atom indices; image relative to the positions as given
        i = order.index_select(0, ea.index_select(0, ent))
        j = order.index_select(0, b.index_select(0, sel))
        del b, sel
        image = eimg.index_select(0, ent)
        image += shift.index_select(0, i)
        image -= shift.index_select(0, j)
        out_i.append(i)
        out_j.append(j)
        out_img.append(image)
        del i, j, image, ent
    return out_i, out_j, out_img


def _receivers_and_senders(frame: _Frame, grid: _Grid, ranges: _Ranges) -> Tuple[Tensor, Tensor]:
    """Per entry, the receiver's wrapped position minus the lattice translation of the senders
    [R, 3], and the wrapped positions of the sorted atoms [N, 3], both in the search dtype."""
    ps64 = frame.wrapped.index_select(0, grid.order)
    q = ps64.index_select(0, ranges.receiver)
    if frame.boxes is not None:
        nzi = (ranges.image != 0).any(dim=1).nonzero().squeeze(1)
        if nzi.numel() > 0:
            imf = ranges.image.index_select(0, nzi).to(torch.float64)
            if frame.shared_box is not None:
                sv = imf @ frame.shared_box
            else:
                receiver_bin = grid.atom_bin.index_select(0, ranges.receiver.index_select(0, nzi))
                receiver_sys = grid.sys.index_select(0, receiver_bin)
                sv = torch.bmm(imf.unsqueeze(1), frame.boxes.index_select(0, receiver_sys)).squeeze(1)
            q.index_add_(0, nzi, sv, alpha=-1)
    return q.to(frame.dtype), ps64.to(frame.dtype)


def _chunk_bounds(csum: Tensor) -> List[int]:
    """Entry boundaries [0, ..., R] of the chunks, from the inclusive prefix sum ``csum`` [R]
    of the entries' candidate counts: a new chunk starts after every _CHUNK candidates."""
    total = int(csum[-1])
    n_e = csum.shape[0]
    if total <= _CHUNK:
        return [0, n_e]
    marks = torch.arange(_CHUNK, total, _CHUNK, device=csum.device)
    cuts = torch.searchsorted(csum, marks, right=True).tolist()
    return sorted(set([0, n_e] + [c for c in cuts if 0 < c < n_e]))


def _mirror_and_sort(half: List[Tensor], n: int, loop: bool) -> Tuple[Tensor, Tensor]:
    """From one direction of every pair, [i, j, image] (the list is emptied to free memory
    early), build both directions plus the self loops, sorted by (receiver, sender, image).
    Returns edge_index [2, E] and image [E, 3]."""
    i, j, image = half
    half.clear()
    device = i.device
    h = i.shape[0]
    n_loop = n if loop else 0
    e = 2 * h + n_loop
    r = int(image.abs().max()) if h > 0 else 0
    w = 2 * r + 1
    kimg = w * w * w
    if n * n * kimg >= _MAX_KEY:
        return _mirror_and_sort_large(i, j, image, n, loop)

    # One int64 key per edge: (receiver * n + sender) * kimg + image key; the image key of -image
    # is kimg - 1 - (image key).
    key = torch.empty(e, dtype=torch.long, device=device)
    k1, k2, k3 = key[:h], key[h : 2 * h], key[2 * h :]
    torch.mul(i, n, out=k1).add_(j)
    torch.mul(j, n, out=k2).add_(i)
    del i, j
    if loop:
        torch.mul(torch.arange(n, device=device), n + 1, out=k3)
    if kimg > 1:
        ik = ((image[:, 0] + r) * w + (image[:, 1] + r)) * w + (image[:, 2] + r)
        del image
        k1.mul_(kimg).add_(ik)
        k2.mul_(kimg).sub_(ik).add_(kimg - 1)
        del ik
        k3.mul_(kimg).add_((r * w + r) * w + r)
    else:
        del image
    del k1, k2, k3
    key = torch.sort(key).values

    edge_index = torch.empty(2, e, dtype=torch.long, device=device)
    image = torch.empty(e, 3, dtype=torch.long, device=device)
    if kimg > 1:
        ik = key % kimg
        key.div_(kimg, rounding_mode="floor")
        image[:, 2] = ik % w - r
        ik.div_(w, rounding_mode="floor")
        image[:, 1] = ik % w - r
        ik.div_(w, rounding_mode="floor")
        image[:, 0] = ik - r
        del ik
    else:
        image.zero_()
    torch.div(key, n, rounding_mode="floor", out=edge_index[0])
    torch.remainder(key, n, out=edge_index[1])
    return edge_index, image


def _canonical_half(i: Tensor, j: Tensor, image: Tensor) -> Tuple[Tensor, Tensor]:
    """One direction of every pair, [i, j, image], in the canonical form of ``half=True``
    (module docstring): each pair oriented first <= second (the positive image for an atom's
    own images), sorted by (first, second, image). Returns edge_index [2, P] and image [P, 3]."""
    x, y, z = image.unbind(1)
    negative = (x < 0) | ((x == 0) & ((y < 0) | ((y == 0) & (z < 0))))
    flip = (i > j) | ((i == j) & negative)
    first, second = torch.where(flip, j, i), torch.where(flip, i, j)
    image = torch.where(flip[:, None], -image, image)
    order = _lexsort((image[:, 2], image[:, 1], image[:, 0], second, first))
    return torch.stack((first, second)).index_select(1, order), image.index_select(0, order)


def _lexsort(columns: Sequence[Tensor]) -> Tensor:
    """The permutation sorting rows by the last column, then the one before, ... (stable sorts)."""
    perm = torch.arange(columns[0].shape[0], device=columns[0].device)
    for column in columns:
        perm = perm.index_select(0, torch.argsort(column.index_select(0, perm), stable=True))
    return perm


def _mirror_and_sort_large(i: Tensor, j: Tensor, image: Tensor, n: int, loop: bool) -> Tuple[Tensor, Tensor]:
    """Fallback for images too large to pack into one key: successive stable sorts."""
    recv = torch.cat([i, j])
    send = torch.cat([j, i])
    image = torch.cat([image, -image])
    if loop:
        ar = torch.arange(n, device=i.device)
        recv = torch.cat([recv, ar])
        send = torch.cat([send, ar])
        image = torch.cat([image, torch.zeros(n, 3, dtype=torch.long, device=i.device)])
    perm = _lexsort((image[:, 2], image[:, 1], image[:, 0], send, recv))
    return torch.stack([recv.index_select(0, perm), send.index_select(0, perm)]), image.index_select(0, perm)
