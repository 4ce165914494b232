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
* ``edge_vec`` / ``edge_weight`` are differentiable with respect to ``pos`` and ``box``; the
  gradient of the length of a zero-length edge (a self loop) is 0.

Boxes
-----
``box`` is None (open boundaries), a (3, 3) tensor shared by all systems (also accepted as
(1, 3, 3)) or (n_systems, 3, 3), one per system, where ``n_systems > batch.max()``. Rows are
the lattice vectors a, b, c. Any non-singular cell works: arbitrary triclinic, either
handedness, thinner than twice the cutoff or even than the cutoff (then an atom sees several
images of the same neighbour). ``pbc`` gives the periodicity per lattice vector (default: all
periodic when a box is given), so slabs and wires are supported. Atoms may lie anywhere,
inside the cell or not: they are wrapped internally and the returned images refer to the
positions as given.

Algorithm
---------
Pair indices and integer images are found under ``no_grad``; the vectors are then recomputed
from the caller's tensors with differentiable ops.

1. Fractional coordinates ``f = pos @ box^-1`` (float64); periodic axes are wrapped into
   [0, 1) and the integer part is remembered as the atom's own lattice shift.
2. Each system is cut into bins along the lattice directions, with a width (measured
   perpendicular to the faces, i.e. in units of the cell height h_k = V / |b x c| etc.) of at
   least cutoff / 2: periodic axes get n_k = max(1, floor(2 h_k / cutoff)) bins tiling the
   cell, open axes bins spanning the atoms' extent. Two atoms closer than the cutoff are then
   at most m_k = ceil(cutoff n_k / h_k) bins apart along k (2, or more when the cell is
   thinner than half the cutoff), in the infinite periodic bin lattice.
3. Atoms are sorted by a global bin key ((system, bx, by, bz), z fastest), so the atoms of a
   run of consecutive z bins form one contiguous range. For every bin column offset (o0, o1)
   in one half of the plane, the sender range of each occupied bin is the run of bins
   z - m .. z + m of the target column, split where it crosses the periodic z boundary
   (each piece has its own image); the range bounds come from a dense prefix count over the
   bin grid (or a binary search when the grid is much larger than the atom count). Column
   (0, 0) takes z offsets 0 .. m only, and in the own bin only senders after the receiver,
   so every pair is produced once; the reverse direction comes from mirroring.
4. The ranges are expanded into candidate pairs in bounded chunks (float32 arithmetic for
   float32 input, float64 otherwise) and filtered with a cutoff enlarged by a small margin
   that covers rounding; the survivors are then filtered exactly on the returned (input
   dtype) lengths, mirrored (the two directions get bit-identical lengths), given their self
   loops and sorted by a single packed int64 key.

Work and memory are O(N + E): about 3.7 candidates per kept pair for dense systems, no
array over all bins x all atoms, no neighbour cap. All systems of a batch are processed
together (no Python loop over systems or atoms; the Python loops run over bin offsets only).
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

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
    """Pairs sorted by receiver. edge_index [2, E] int64, edge_vec [E, 3], edge_weight [E],
    image [E, 3] int64 lattice translation applied to the sender."""

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

    Raises:
        ValueError: bad shapes, singular or non-finite box, bad cutoffs, non-finite positions.
    """
    pos, batch, box, periodic, cu, cl = _check_inputs(pos, batch, cutoff_upper, cutoff_lower, box, pbc)
    n = pos.shape[0]
    if box is not None and not any(periodic):
        box = None  # nothing periodic: open boundaries (the box only had to be valid)
    boxc = None if box is None else box.to(pos.dtype)

    with torch.no_grad():
        # One direction of every pair (original atom indices, image of the sender).
        i, j, image = _search(pos, batch, box, periodic, cu, cl)
        # Exact filter on the very values that will be returned (the search used a slightly
        # larger cutoff). Both directions get bit-identical lengths, so filter before mirroring.
        if i.numel() > 0:
            d = _safe_norm(_edge_vectors(pos.detach(), None if boxc is None else boxc.detach(), batch, i, j, image))
            keep = (d >= cl) & (d < cu)
            del d
            if not bool(keep.all()):
                sel = keep.nonzero().squeeze(1)
                i, j, image = i.index_select(0, sel), j.index_select(0, sel), image.index_select(0, sel)
            del keep
        half = [i, j, image]
        del i, j, image
        edge_index, image = _mirror_and_sort(half, n, loop)

    edge_vec = _edge_vectors(pos, boxc, batch, edge_index[0], edge_index[1], image)
    edge_weight = _safe_norm(edge_vec)
    return NeighborList(edge_index, edge_vec, edge_weight, image)


# --------------------------------------------------------------------------------------
# input checks


def _check_inputs(
    pos: Tensor,
    batch: Optional[Tensor],
    cutoff_upper: float,
    cutoff_lower: float,
    box: Optional[Tensor],
    pbc: Optional[Sequence[bool]],
) -> Tuple[Tensor, Tensor, Optional[Tensor], List[bool], float, float]:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must be a tensor of shape [N, 3], got {_shape(pos)}")
    if not pos.is_floating_point():
        raise ValueError(f"pos must be floating point, got {pos.dtype}")
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    if not isinstance(batch, Tensor) or batch.shape != (n,):
        raise ValueError(f"batch must be a tensor of shape [{n}], got {_shape(batch)}")
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"batch must be an integer tensor, got {batch.dtype}")
    batch = batch.to(device=pos.device, dtype=torch.long)
    if n > 0 and int(batch.min()) < 0:
        raise ValueError("batch must not contain negative system indices")

    cu, cl = float(cutoff_upper), float(cutoff_lower)
    if not cu > 0 or cu != cu or cu == float("inf"):
        raise ValueError(f"cutoff_upper must be a finite positive number, got {cutoff_upper}")
    if not cl < cu:
        raise ValueError(f"cutoff_lower ({cutoff_lower}) must be smaller than cutoff_upper ({cutoff_upper})")
    if n > 0 and not bool(torch.isfinite(pos.detach()).all()):
        raise ValueError("pos contains non-finite values")

    if pbc is not None:
        pbc_list = [bool(p) for p in pbc]
        if len(pbc_list) != 3:
            raise ValueError(f"pbc must have 3 entries (one per lattice vector), got {len(pbc_list)}")
    else:
        pbc_list = [box is not None] * 3

    if box is None:
        if any(pbc_list):
            raise ValueError(f"pbc={pbc_list} requires a box")
        return pos, batch, None, pbc_list, cu, cl

    if not isinstance(box, Tensor):
        raise ValueError(f"box must be a tensor, got {type(box).__name__}")
    if not box.is_floating_point():
        raise ValueError(f"box must be floating point, got {box.dtype}")
    n_sys = int(batch.max()) + 1 if n > 0 else 0
    if box.shape == (3, 3) or box.shape == (1, 3, 3):
        box = box.reshape(3, 3)
    elif box.dim() == 3 and box.shape[1:] == (3, 3):
        if box.shape[0] < n_sys:
            raise ValueError(
                f"box has shape {tuple(box.shape)} but batch has {n_sys} systems; "
                "expected (3, 3) or (n_systems, 3, 3)"
            )
    else:
        raise ValueError(f"box must have shape (3, 3) or (n_systems, 3, 3), got {tuple(box.shape)}")
    box = box.to(device=pos.device)
    b64 = box.detach().to(torch.float64).reshape(-1, 3, 3)
    if not bool(torch.isfinite(b64).all()):
        raise ValueError("box contains non-finite values")
    if b64.shape[0] > 0:
        vol = torch.linalg.det(b64).abs()
        scale = b64.norm(dim=2).prod(dim=1)
        bad = (vol <= 1e-12 * scale) | (scale == 0)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            where = "" if box.dim() == 2 else f" (system {k})"
            raise ValueError(
                f"box is singular (zero or near-zero volume){where}: its rows (lattice vectors) "
                f"must be linearly independent, got {b64[k].tolist()}"
            )
    return pos, batch, box, pbc_list, cu, cl


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


# --------------------------------------------------------------------------------------
# differentiable part


def _edge_vectors(pos: Tensor, box: Optional[Tensor], batch: Tensor, i: Tensor, j: Tensor, image: Tensor) -> Tensor:
    """pos[i] - pos[j] - image @ box[system]. The lattice term, n0 * a + n1 * b + n2 * c, is
    only evaluated for the edges with a non-zero image; every operation is elementwise and
    sign-symmetric, so the edges (i, j, n) and (j, i, -n) get exactly opposite vectors."""
    vec = pos.index_select(0, i) - pos.index_select(0, j)
    if box is None:
        return vec
    nz = (image != 0).any(dim=1).nonzero().squeeze(1)
    if nz.numel() == 0:
        return vec
    # Few periodic edges (large cells): translate only those; many (small cells): all edges.
    # Both give the same values (x - s == x + (-1) * s, and x - 0 == x).
    dense = 3 * nz.numel() > image.shape[0]
    img = (image if dense else image.index_select(0, nz)).to(box.dtype)
    if box.dim() == 2:
        a, b, c = box[0], box[1], box[2]
    else:
        sys_e = batch.index_select(0, i if dense else i.index_select(0, nz))
        a = box[:, 0].index_select(0, sys_e)
        b = box[:, 1].index_select(0, sys_e)
        c = box[:, 2].index_select(0, sys_e)
    shift = img[:, 0:1] * a + img[:, 1:2] * b + img[:, 2:3] * c
    return vec - shift if dense else vec.index_add(0, nz, shift, alpha=-1)


def _safe_norm(vec: Tensor) -> Tensor:
    """|vec| along the last axis, with a zero (not NaN) gradient at vec = 0."""
    sq = vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1] + vec[:, 2] * vec[:, 2]
    nonzero = sq > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))


# --------------------------------------------------------------------------------------
# the cell-list search (no grad)


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
    n = pos.shape[0]
    i64 = torch.long
    f64 = torch.float64
    if n == 0:
        e = torch.zeros(0, dtype=i64, device=device)
        return e, e, torch.zeros(0, 3, dtype=i64, device=device)

    p = pos.detach().to(f64)
    # Candidate distances are computed in float32 for float32 (or narrower) input.
    sdt = f64 if pos.dtype == f64 else torch.float32
    n_sys = int(batch.max()) + 1
    per = torch.tensor(periodic, dtype=torch.bool, device=device)

    shared = True
    if box is None:
        boxes = None
        frac = p
        heights = torch.ones(n_sys, 3, dtype=f64, device=device)
        box_scale = 0.0
    else:
        b64 = box.detach().to(f64)
        shared = b64.dim() == 2
        boxes = b64.unsqueeze(0).expand(n_sys, 3, 3) if shared else b64[:n_sys]
        if shared:
            frac = p @ torch.linalg.inv(b64)
        else:
            frac = torch.bmm(p.unsqueeze(1), torch.linalg.inv(boxes).index_select(0, batch)).squeeze(1)
        vol = torch.linalg.det(boxes).abs()
        # Height of the cell along a = V / |b x c| (distance between the faces spanned by b, c).
        heights = torch.stack(
            [
                vol / torch.linalg.cross(boxes[:, 1], boxes[:, 2]).norm(dim=1),
                vol / torch.linalg.cross(boxes[:, 2], boxes[:, 0]).norm(dim=1),
                vol / torch.linalg.cross(boxes[:, 0], boxes[:, 1]).norm(dim=1),
            ],
            dim=1,
        )
        box_scale = float(boxes.norm(dim=2).sum(dim=1).max())

    # Search cutoffs, enlarged by a margin that covers the rounding of the search (float32
    # or float64) and of the returned (input dtype) distances; the caller filters exactly.
    eps = max(torch.finfo(pos.dtype).eps, torch.finfo(sdt).eps)
    scale = float(p.abs().max()) + box_scale
    delta = 32.0 * eps * (4.0 * scale + 3.0 * cu) + 1e-9 * cu
    cs = cu + delta
    cls = max(cl - delta, 0.0)

    # Wrap periodic fractional coordinates into [0, 1); shift = the integer part.
    shift = torch.zeros(n, 3, dtype=i64, device=device)
    pw = p
    if boxes is not None:
        fl = torch.floor(frac)
        fl[:, ~per] = 0.0
        shift = fl.to(i64)
        frac = frac - fl
        if shared:
            pw = p - fl @ b64
        else:
            pw = p - torch.bmm(fl.unsqueeze(1), boxes.index_select(0, batch)).squeeze(1)

    # Extent of every system along the open axes (fractional units).
    idx3 = batch.unsqueeze(1).expand(n, 3)
    fmin = torch.zeros(n_sys, 3, dtype=f64, device=device).scatter_reduce(0, idx3, frac, "amin", include_self=False)
    fmax = torch.zeros(n_sys, 3, dtype=f64, device=device).scatter_reduce(0, idx3, frac, "amax", include_self=False)
    rng = torch.where(per, torch.ones_like(fmax), fmax - fmin)
    fmin = torch.where(per, torch.zeros_like(fmin), fmin)

    # Bins of (perpendicular) width >= cs / _SUB; periodic axes tile the cell exactly.
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
    nb_i, m_i = nb.to(i64), m.to(i64)

    binc = torch.floor((frac - fmin.index_select(0, batch)) / width.index_select(0, batch))
    binc = torch.minimum(binc.clamp(min=0), (nb - 1).index_select(0, batch)).to(i64)
    bins_per_sys = nb_i[:, 0] * nb_i[:, 1] * nb_i[:, 2]
    base = torch.cumsum(bins_per_sys, 0) - bins_per_sys
    key = base.index_select(0, batch) + (
        binc[:, 0] * nb_i[:, 1].index_select(0, batch) + binc[:, 1]
    ) * nb_i[:, 2].index_select(0, batch) + binc[:, 2]

    # Atoms sorted by bin: every bin, and every run of consecutive z bins, is a contiguous range.
    order = torch.argsort(key, stable=True)
    ks = key.index_select(0, order)
    _, cnt = torch.unique_consecutive(ks, return_counts=True)
    n_bins = cnt.shape[0]
    bstart = torch.cumsum(cnt, 0) - cnt
    atom_bin = torch.repeat_interleave(torch.arange(n_bins, device=device), cnt, output_size=n)
    first = order.index_select(0, bstart)
    bsys = batch.index_select(0, first)
    bcoord = binc.index_select(0, first)
    bn = nb_i.index_select(0, bsys)
    bm = m_i.index_select(0, bsys)
    bbase = base.index_select(0, bsys)
    arange_n = torch.arange(n, device=device)
    # Atom range of a run of bin keys [klo, khi]: a dense prefix count over all bins when the
    # bin grid is not much larger than the atom count, a binary search otherwise.
    total_bins = int(bins_per_sys.sum())
    if total_bins <= 8 * n + 4096:
        first_atom = torch.zeros(total_bins + 1, dtype=i64, device=device)
        first_atom[1:] = torch.cumsum(torch.bincount(ks, minlength=total_bins), 0)

        def atom_range(klo: Tensor, khi: Tensor) -> Tuple[Tensor, Tensor]:
            return (
                first_atom.index_select(0, klo.clamp(0, total_bins)),
                first_atom.index_select(0, (khi + 1).clamp(0, total_bins)),
            )

    else:

        def atom_range(klo: Tensor, khi: Tensor) -> Tuple[Tensor, Tensor]:
            return torch.searchsorted(ks, klo), torch.searchsorted(ks, khi, right=True)

    mmax = [int(bm[:, k].max()) for k in range(3)]
    n_offsets = (2 * mmax[0] + 1) * (2 * mmax[1] + 1) * (2 * mmax[2] + 1)
    if n_offsets > _MAX_OFFSETS:
        raise ValueError(
            f"box is too thin for the cutoff: a cell height is {float(heights.min()):.3g} for a cutoff "
            f"of {cu:.3g}, which needs {n_offsets} periodic images (more than {_MAX_OFFSETS})"
        )
    uniform_m = all(bool((bm[:, k] == mmax[k]).all()) for k in range(3))

    # Candidate ranges ("entries"): receiver a (sorted index), senders start .. start + count - 1,
    # bin image of the senders. Bin columns (o0, o1) in half of the plane; the column (0, 0)
    # covers z offsets 0 .. m (offset 0: senders after a in its own bin). Ranges are found per
    # occupied bin, then given to each atom of the bin.
    g_bin: List[Tensor] = []
    g_start: List[Tensor] = []
    g_cnt: List[Tensor] = []
    g_img: List[Tensor] = []
    e_a: List[Tensor] = []
    e_start: List[Tensor] = []
    e_cnt: List[Tensor] = []
    e_img: List[Tensor] = []
    z, nz_, mz = bcoord[:, 2], bn[:, 2], bm[:, 2]
    for o0 in range(0, mmax[0] + 1):
        for o1 in range(-mmax[1] if o0 > 0 else 0, mmax[1] + 1):
            own = o0 == 0 and o1 == 0
            valid = None if uniform_m else (bm[:, 0] >= o0) & (bm[:, 1] >= abs(o1))
            img = torch.zeros(n_bins, 3, dtype=i64, device=device)
            txy = []
            for k, o in ((0, o0), (1, o1)):
                t = bcoord[:, k] + o
                if periodic[k]:
                    img[:, k] = torch.div(t, bn[:, k], rounding_mode="floor")
                    t = t - img[:, k] * bn[:, k]
                elif o != 0:
                    inside = (t >= 0) & (t < bn[:, k])
                    valid = inside if valid is None else valid & inside
                txy.append(t)
            colkey = bbase + (txy[0] * bn[:, 1] + txy[1]) * nz_
            zl = z if own else z - mz
            zh = z + mz
            if periodic[2]:
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
                if periodic[2]:
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
                start, end = atom_range(colkey + lo, colkey + hi)
                if own and piece == 0:
                    # The run starts with a's own bin (image 0): only senders b > a.
                    ca = end.index_select(0, atom_bin) - arange_n - 1
                    sel = (ca > 0).nonzero().squeeze(1)
                    e_a.append(sel)
                    e_start.append(sel + 1)
                    e_cnt.append(ca.index_select(0, sel))
                    e_img.append(torch.zeros(sel.shape[0], 3, dtype=i64, device=device))
                    continue
                cb = torch.where(ok, end - start, torch.zeros_like(start))
                sel = (cb > 0).nonzero().squeeze(1)
                if sel.numel() == 0:
                    continue
                im = img.index_select(0, sel)
                if iz is not None:
                    im[:, 2] = iz.index_select(0, sel)
                g_bin.append(sel)
                g_start.append(start.index_select(0, sel))
                g_cnt.append(cb.index_select(0, sel))
                g_img.append(im)

    if g_bin:
        gb = torch.cat(g_bin)
        reps = cnt.index_select(0, gb)
        tot = int(reps.sum())
        idx = torch.repeat_interleave(torch.arange(gb.shape[0], device=device), reps, output_size=tot)
        local = torch.arange(tot, device=device) - (torch.cumsum(reps, 0) - reps).index_select(0, idx)
        e_a.append(bstart.index_select(0, gb).index_select(0, idx) + local)
        e_start.append(torch.cat(g_start).index_select(0, idx))
        e_cnt.append(torch.cat(g_cnt).index_select(0, idx))
        e_img.append(torch.cat(g_img).index_select(0, idx))
        del gb, reps, idx, local, g_bin, g_start, g_cnt, g_img

    ea = torch.cat(e_a)
    if ea.numel() == 0:
        e = torch.zeros(0, dtype=i64, device=device)
        return e, e, torch.zeros(0, 3, dtype=i64, device=device)
    est = torch.cat(e_start)
    ecnt = torch.cat(e_cnt)
    eimg = torch.cat(e_img)
    del e_a, e_start, e_cnt, e_img

    # Receiver position minus the lattice translation of the senders, per entry.
    ps64 = pw.index_select(0, order)
    q = ps64.index_select(0, ea)
    if boxes is not None:
        nzi = (eimg != 0).any(dim=1).nonzero().squeeze(1)
        if nzi.numel() > 0:
            imf = eimg.index_select(0, nzi).to(f64)
            if shared:
                sv = imf @ b64
            else:
                bb = boxes.index_select(0, bsys.index_select(0, atom_bin.index_select(0, ea.index_select(0, nzi))))
                sv = torch.bmm(imf.unsqueeze(1), bb).squeeze(1)
            q.index_add_(0, nzi, sv, alpha=-1)
    q = q.to(sdt)
    ps = ps64.to(sdt)
    del ps64

    # Expand the ranges into candidate pairs, in chunks, and keep those within the cutoff.
    cs2 = cs * cs
    cls2 = cls * cls
    csum = torch.cumsum(ecnt, 0)
    total = int(csum[-1])
    n_e = ecnt.shape[0]
    if total <= _CHUNK:
        bounds = [0, n_e]
    else:
        marks = torch.arange(_CHUNK, total, _CHUNK, device=device)
        cuts = torch.searchsorted(csum, marks, right=True).tolist()
        bounds = sorted(set([0, n_e] + [c for c in cuts if 0 < c < n_e]))
    out_i: List[Tensor] = []
    out_j: List[Tensor] = []
    out_img: List[Tensor] = []
    for lo_e, hi_e in zip(bounds[:-1], bounds[1:]):
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

    del ea, est, ecnt, eimg, q, ps, csum
    i = torch.cat(out_i)
    del out_i
    j = torch.cat(out_j)
    del out_j
    image = torch.cat(out_img)
    return i, j, image


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
    perm = torch.arange(recv.shape[0], device=i.device)
    for col in (image[:, 2], image[:, 1], image[:, 0], send, recv):
        perm = perm.index_select(0, torch.argsort(col.index_select(0, perm), stable=True))
    return torch.stack([recv.index_select(0, perm), send.index_select(0, perm)]), image.index_select(0, perm)
