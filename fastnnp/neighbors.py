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
Pair indices and integer images are found under ``no_grad`` in float64; the vectors are then
recomputed from the caller's tensors with differentiable ops.

1. Fractional coordinates ``f = pos @ box^-1``; periodic axes are wrapped into [0, 1)
   (the integer part is remembered as the atom's own shift).
2. Each system's space is cut into bins along the lattice directions, as many as fit with a
   width (measured perpendicular to the opposite faces) of at least the cutoff: n_k bins along
   periodic axis k of a cell of height h_k (n_k = max(1, floor(h_k / cutoff))); along open
   axes the bins span the atoms' extent. A pair closer than the cutoff is then at most m_k
   bins apart along k, with m_k = 1 unless the cell is thinner than the cutoff
   (m_k = ceil(cutoff * n_k / h_k)).
3. Atoms are sorted by a global bin key (system, bin) so every occupied bin is a contiguous
   run. For each bin offset o in one half of the offset box [-m, m]^3 (the other half comes
   from symmetry), the target bin of every occupied bin is found by binary search in the
   sorted keys (the infinite periodic bin lattice is folded back into the cell, which gives
   the image), the candidate pairs are expanded, in bounded chunks, and filtered by distance.
   Offset 0 pairs atoms of the same bin once (a < b).
4. Pairs are mirrored, self loops added, and everything is sorted by one int64 key.

Work and memory are O(N + E) (candidates are ~ (3 / (4 pi / 3)) / 2 = 3.2 times the pairs
for dense systems); all systems of a batch are processed together.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

# Largest number of candidate pairs expanded at once (bounds the peak memory of the search).
_CHUNK = 1 << 21
# Bins per axis are capped so that keys fit in int64 (only reached by absurdly sparse input).
_MAX_BINS_PER_AXIS = 1 << 20
_MAX_TOTAL_BINS = 1 << 62


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
    """All pairs ``cutoff_lower <= d < cutoff_upper`` (see the module docstring).

    Args:
        pos: [N, 3] positions (floating point).
        batch: [N] int64 system index of every atom (no pairs across systems).
        cutoff_upper: exclusive upper distance cutoff, > 0.
        cutoff_lower: inclusive lower distance cutoff, < cutoff_upper.
        box: None, (3, 3) or (n_systems, 3, 3) lattice vectors as rows.
        loop: add one self loop (length 0) per atom.
        pbc: per-lattice-vector periodicity, three booleans; default all True with a box.
            Needs a box when any entry is True.
    """
    pos, batch, box, periodic, cu, cl = _check_inputs(pos, batch, cutoff_upper, cutoff_lower, box, pbc)
    if box is not None and not any(periodic):
        box = None  # nothing is periodic: open boundaries (the box only had to be valid)

    with torch.no_grad():
        recv, send, image = _search(pos, batch, box, periodic, cu, cl, loop)

    edge_vec = pos.index_select(0, recv) - pos.index_select(0, send)
    if box is not None:
        edge_vec = edge_vec - _lattice_shift(image, box.to(pos.dtype), batch, recv)
    edge_weight = _safe_norm(edge_vec)

    # Exact filter on the returned (rounded) values; the search used a slightly larger cutoff.
    with torch.no_grad():
        d = edge_weight.detach()
        keep = (d < cu) & (d >= cl)
        if loop:
            keep |= (recv == send) & (image == 0).all(dim=1)
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(1)
            recv, send, image = recv[idx], send[idx], image[idx]
        else:
            idx = None
    if idx is not None:
        edge_vec = edge_vec.index_select(0, idx)
        edge_weight = edge_weight.index_select(0, idx)
    return NeighborList(torch.stack([recv, send]), edge_vec, edge_weight, image)


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


def _lattice_shift(image: Tensor, box: Tensor, batch: Tensor, recv: Tensor) -> Tensor:
    """image @ box[system of the edge], as n0 * a + n1 * b + n2 * c (sign-symmetric, so the
    two directions of a pair get exactly opposite vectors)."""
    img = image.to(box.dtype)
    if box.dim() == 2:
        a, b, c = box[0], box[1], box[2]
    else:
        sys_e = batch.index_select(0, recv)
        a = box[:, 0].index_select(0, sys_e)
        b = box[:, 1].index_select(0, sys_e)
        c = box[:, 2].index_select(0, sys_e)
    return img[:, 0:1] * a + img[:, 1:2] * b + img[:, 2:3] * c


def _safe_norm(vec: Tensor) -> Tensor:
    """|vec| along the last axis, with a zero (not NaN) gradient at vec = 0."""
    sq = vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1] + vec[:, 2] * vec[:, 2]
    pos_ = sq > 0
    return torch.where(pos_, torch.sqrt(torch.where(pos_, sq, torch.ones_like(sq))), torch.zeros_like(sq))


# --------------------------------------------------------------------------------------
# the cell-list search (no grad)


def _search(
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor],
    periodic: List[bool],
    cu: float,
    cl: float,
    loop: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    device = pos.device
    n = pos.shape[0]
    i64 = torch.long
    if n == 0:
        e = torch.zeros(0, dtype=i64, device=device)
        return e, e, torch.zeros(0, 3, dtype=i64, device=device)

    p = pos.detach().to(torch.float64)
    # Search cutoffs with a margin covering the rounding of the final (input dtype) distances.
    eps = max(torch.finfo(pos.dtype).eps, torch.finfo(torch.float64).eps)
    delta = 32.0 * eps * (4.0 * float(p.abs().max()) + 3.0 * cu) + 1e-12 * cu
    cs = cu + delta
    cls = max(cl - delta, 0.0)

    n_sys = int(batch.max()) + 1
    if box is None:
        boxes = None
        frac = p.clone()
        heights = torch.ones(n_sys, 3, dtype=torch.float64, device=device)
        per_atom_box = None
    else:
        b64 = box.detach().to(torch.float64)
        boxes = b64.expand(n_sys, 3, 3) if b64.dim() == 2 else b64[:n_sys]
        inv = torch.linalg.inv(boxes)
        if b64.dim() == 2:
            frac = p @ inv[0]
            per_atom_box = None
        else:
            frac = torch.bmm(p.unsqueeze(1), inv.index_select(0, batch)).squeeze(1)
            per_atom_box = batch
        vol = torch.linalg.det(boxes).abs()
        # height along a = V / |b x c|, etc.
        bc = torch.linalg.cross(boxes[:, 1], boxes[:, 2]).norm(dim=1)
        ca = torch.linalg.cross(boxes[:, 2], boxes[:, 0]).norm(dim=1)
        ab = torch.linalg.cross(boxes[:, 0], boxes[:, 1]).norm(dim=1)
        heights = torch.stack([vol / bc, vol / ca, vol / ab], dim=1)

    per = torch.tensor(periodic, dtype=torch.bool, device=device)
    # Own shift of each atom (wrap of periodic axes into [0, 1)).
    shift = torch.zeros(n, 3, dtype=i64, device=device)
    if bool(per.any()):
        fl = torch.floor(frac)
        fl[:, ~per] = 0.0
        shift = fl.to(i64)
        frac = frac - fl
        if per_atom_box is None:
            pw = p - fl @ boxes[0]
        else:
            pw = p - torch.bmm(fl.unsqueeze(1), boxes.index_select(0, batch)).squeeze(1)
    else:
        pw = p

    # Per-system extent along open axes (fractional units).
    fmin = torch.zeros(n_sys, 3, dtype=torch.float64, device=device)
    fmax = torch.zeros(n_sys, 3, dtype=torch.float64, device=device)
    idx3 = batch.unsqueeze(1).expand(n, 3)
    fmin = fmin.scatter_reduce(0, idx3, frac, "amin", include_self=False)
    fmax = fmax.scatter_reduce(0, idx3, frac, "amax", include_self=False)
    rng = torch.where(per, torch.ones_like(fmax), fmax - fmin)
    fmin = torch.where(per, torch.zeros_like(fmin), fmin)

    # Number of bins per axis; m = how many bins a pair within the cutoff can be apart.
    cap = _MAX_BINS_PER_AXIS
    while True:
        nb = torch.floor(rng * heights / cs).clamp(1, cap)
        if float(nb.prod(dim=1).sum()) <= _MAX_TOTAL_BINS:
            break
        cap //= 2
    # Fractional bin width: periodic axes tile the cell exactly (n bins, each >= the cutoff
    # unless the cell itself is thinner); open axes use bins >= the cutoff.
    width = torch.where(per, 1.0 / nb, torch.maximum(rng / nb, cs / heights))
    nb_i = nb.to(i64)
    # Periodic cell thinner than the cutoff: a neighbour can be up to ceil(cs / h) cells away.
    thin = per & (heights < cs)
    m = torch.where(thin, torch.ceil(cs / heights), torch.ones_like(nb)).to(i64)

    binc = torch.floor((frac - fmin.index_select(0, batch)) / width.index_select(0, batch))
    binc = torch.minimum(binc.clamp(min=0), (nb - 1).index_select(0, batch)).to(i64)
    bins_per_sys = nb_i[:, 0] * nb_i[:, 1] * nb_i[:, 2]
    base = torch.cumsum(bins_per_sys, 0) - bins_per_sys
    n1, n2 = nb_i[:, 1], nb_i[:, 2]
    key = base.index_select(0, batch) + (binc[:, 0] * n1.index_select(0, batch) + binc[:, 1]) * n2.index_select(
        0, batch
    ) + binc[:, 2]

    order = torch.argsort(key, stable=True)
    ks = key.index_select(0, order)
    ukeys, cnt = torch.unique_consecutive(ks, return_counts=True)
    n_bins = ukeys.shape[0]
    bstart = torch.cumsum(cnt, 0) - cnt
    bend = bstart + cnt
    atom_bin = torch.repeat_interleave(torch.arange(n_bins, device=device), cnt)  # sorted atom -> bin
    first = order.index_select(0, bstart)
    bsys = batch.index_select(0, first)  # system of each occupied bin
    bcoord = binc.index_select(0, first)  # [n_bins, 3]
    bn = nb_i.index_select(0, bsys)
    bbase = base.index_select(0, bsys)
    bm = m.index_select(0, bsys)
    ps = pw.index_select(0, order)  # wrapped positions in bin order
    bbox = None if boxes is None else boxes.index_select(0, bsys)
    arange_n = torch.arange(n, device=device)

    mmax = [int(bm[:, k].max()) for k in range(3)]
    uniform_m = all(bool((bm[:, k] == mmax[k]).all()) for k in range(3))
    cs2, cls2 = cs * cs, cls * cls

    found_a: List[Tensor] = [torch.zeros(0, dtype=i64, device=device)]
    found_b: List[Tensor] = [torch.zeros(0, dtype=i64, device=device)]
    found_img: List[Tensor] = [torch.zeros(0, 3, dtype=i64, device=device)]

    # Offset 0: pairs inside the same bin, a < b (image 0).
    _expand_filter(
        ps, ps, bend.index_select(0, atom_bin) - arange_n - 1, arange_n + 1, None, cs2, cls2,
        found_a, found_b, found_img,
    )

    for o0 in range(0, mmax[0] + 1):
        for o1 in range(-mmax[1] if o0 > 0 else 0, mmax[1] + 1):
            for o2 in range(-mmax[2] if (o0 > 0 or o1 > 0) else 1, mmax[2] + 1):
                o = torch.tensor([o0, o1, o2], dtype=i64, device=device)
                t = bcoord + o
                valid = torch.ones(n_bins, dtype=torch.bool, device=device)
                if not uniform_m:
                    valid &= (o.abs() <= bm).all(dim=1)
                img = torch.zeros(n_bins, 3, dtype=i64, device=device)
                for k in range(3):
                    if periodic[k]:
                        img[:, k] = torch.div(t[:, k], bn[:, k], rounding_mode="floor")
                        t[:, k] -= img[:, k] * bn[:, k]
                    else:
                        valid &= (t[:, k] >= 0) & (t[:, k] < bn[:, k])
                tkey = bbase + (t[:, 0] * bn[:, 1] + t[:, 1]) * bn[:, 2] + t[:, 2]
                tb = torch.searchsorted(ukeys, tkey).clamp(max=n_bins - 1)
                valid &= ukeys.index_select(0, tb) == tkey
                if not bool(valid.any()):
                    continue
                ncand_bin = torch.where(valid, cnt.index_select(0, tb), torch.zeros_like(cnt))
                ncand = ncand_bin.index_select(0, atom_bin)
                start = bstart.index_select(0, tb).index_select(0, atom_bin)
                if bbox is not None and bool((img != 0).any()):
                    sv = torch.bmm(img.to(torch.float64).unsqueeze(1), bbox).squeeze(1)  # [n_bins, 3]
                    q = ps - sv.index_select(0, atom_bin)
                    aimg = img.index_select(0, atom_bin)
                else:
                    q, aimg = ps, None
                _expand_filter(q, ps, ncand, start, aimg, cs2, cls2, found_a, found_b, found_img)

    a = torch.cat(found_a)
    b = torch.cat(found_b)
    img_half = torch.cat(found_img)
    i = order.index_select(0, a)
    j = order.index_select(0, b)
    image = img_half + shift.index_select(0, i) - shift.index_select(0, j)

    recv = torch.cat([i, j])
    send = torch.cat([j, i])
    image = torch.cat([image, -image])
    if loop:
        recv = torch.cat([recv, arange_n])
        send = torch.cat([send, arange_n])
        image = torch.cat([image, torch.zeros(n, 3, dtype=i64, device=device)])
    return _sort_edges(recv, send, image, n)


def _expand_filter(
    q: Tensor,
    ps: Tensor,
    ncand: Tensor,
    start: Tensor,
    aimg: Optional[Tensor],
    cs2: float,
    cls2: float,
    found_a: List[Tensor],
    found_b: List[Tensor],
    found_img: List[Tensor],
) -> None:
    """Receivers a (sorted index) get candidates start[a] .. start[a] + ncand[a] - 1; keep those
    with cls2 <= |q[a] - ps[b]|^2 < cs2. Processed in chunks of at most ~_CHUNK candidates."""
    device = q.device
    n = q.shape[0]
    ncand = ncand.clamp(min=0)
    csum = torch.cumsum(ncand, 0)
    total = int(csum[-1]) if n > 0 else 0
    if total == 0:
        return
    # Chunk boundaries over receivers (each chunk has <= _CHUNK candidates unless one receiver alone has more).
    if total <= _CHUNK:
        bounds = [0, n]
    else:
        marks = torch.arange(_CHUNK, total, _CHUNK, device=device)
        cuts = torch.searchsorted(csum, marks, right=True).tolist()
        bounds = sorted(set([0] + [c for c in cuts if 0 < c < n] + [n]))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        nc = ncand[lo:hi]
        cs_ = csum[lo:hi]
        tot = int(cs_[-1]) - (int(csum[lo - 1]) if lo > 0 else 0)
        if tot == 0:
            continue
        excl = cs_ - nc
        a_loc = torch.repeat_interleave(torch.arange(hi - lo, device=device), nc, output_size=tot)
        off0 = int(csum[lo - 1]) if lo > 0 else 0
        k = torch.arange(off0, off0 + tot, device=device) - excl.index_select(0, a_loc)
        a = a_loc + lo
        b = start[lo:hi].index_select(0, a_loc) + k
        dv = q.index_select(0, a) - ps.index_select(0, b)
        d2 = (dv * dv).sum(dim=1)
        keep = d2 < cs2
        if cls2 > 0:
            keep &= d2 >= cls2
        sel = keep.nonzero().squeeze(1)
        a = a.index_select(0, sel)
        found_a.append(a)
        found_b.append(b.index_select(0, sel))
        if aimg is None:
            found_img.append(torch.zeros(sel.shape[0], 3, dtype=torch.long, device=device))
        else:
            found_img.append(aimg.index_select(0, a))


def _sort_edges(recv: Tensor, send: Tensor, image: Tensor, n: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Sort by (receiver, sender, image) lexicographically."""
    e = recv.shape[0]
    if e == 0:
        return recv, send, image
    r = int(image.abs().max())
    w = 2 * r + 1
    kimg = w * w * w
    if n * n * kimg < (1 << 62):
        img_key = ((image[:, 0] + r) * w + (image[:, 1] + r)) * w + (image[:, 2] + r)
        key = (recv * n + send) * kimg + img_key
        key, _ = torch.sort(key)
        pair, img_key = torch.div(key, kimg, rounding_mode="floor"), key % kimg
        recv, send = torch.div(pair, n, rounding_mode="floor"), pair % n
        iz = img_key % w
        rest = torch.div(img_key, w, rounding_mode="floor")
        image = torch.stack([torch.div(rest, w, rounding_mode="floor") - r, rest % w - r, iz - r], dim=1)
        return recv, send, image
    # Fallback (huge images): successive stable sorts, least significant key first.
    perm = torch.arange(e, device=recv.device)
    for col in (image[:, 2], image[:, 1], image[:, 0], send, recv):
        perm = perm.index_select(0, torch.argsort(col.index_select(0, perm), stable=True))
    return recv.index_select(0, perm), send.index_select(0, perm), image.index_select(0, perm)
