"""Cell-grid steps shared by the torch cell list (:mod:`.cell_list`) and the Triton search
(:mod:`fastnnp.kernels.common.neighbor_search`); all float64 / int64, no grad.

* :func:`cell_frame`: fractional coordinates ``f = pos @ box^-1``, wrapped into [0, 1) with
  the integer part (the atom's lattice shift) remembered, the wrapped Cartesian positions,
  the cell volumes and heights ``h_k`` (distance between the faces spanned by the two other
  rows: V / |b x c|, V / |c x a|, V / |a x b|).
* :func:`bin_coords`, :func:`sort_into_bins`, :func:`bin_starts`: atoms binned on a grid of
  n_k bins per axis per system; each system owns a contiguous block of global bin keys
  ((system, b0, b1, b2), b2 fastest); atoms sorted by key, and the atom range of every bin.

Each search chooses its own bin sizes; these functions only do the bookkeeping.
"""

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class CellFrame(NamedTuple):
    """Atoms in the lattice frame of their system's cell (float64 unless noted)."""

    boxes: Tensor  # [S, 3, 3] cell of every system, rows a, b, c
    frac: Tensor  # [N, 3] fractional coordinates, in [0, 1) along the wrapped axes
    shift: Tensor  # [N, 3] int64 lattice shift removed by the wrapping (0 along unwrapped axes)
    wrapped: Tensor  # [N, 3] positions minus shift @ box (length units)
    volume: Tensor  # [S] |det box|
    heights: Tensor  # [S, 3] cell heights h_k perpendicular to the faces (length units)


def cell_frame(
    pos: Tensor, batch: Tensor, box: Tensor, n_systems: int, batched: bool, wrap: Optional[Tensor] = None
) -> CellFrame:
    """The atoms ``pos`` [N, 3] (float64) of systems ``batch`` [N] in their cells.

    Args:
        box: float64 (3, 3), shared by all systems, or (>= n_systems, 3, 3), one per system.
        n_systems: S, the number of systems (batch.max() + 1).
        batched: how a shared box is applied: True, by a batched product with each atom's cell
            (the Triton search's arithmetic); False, by one product with the (3, 3) cell (the
            cell list's). A per-system box always uses the batched product.
        wrap: [3] bool, the axes to wrap (the periodic ones); default all.
    """
    shared = box.dim() == 2
    boxes = box.unsqueeze(0).expand(n_systems, 3, 3) if shared else box[:n_systems]
    inverse, volume, heights = cell_geometry(boxes)
    one_product = shared and not batched
    if one_product:
        frac = pos @ inverse[0]
    else:
        frac = torch.bmm(pos.unsqueeze(1), inverse.index_select(0, batch)).squeeze(1)
    floor = torch.floor(frac)
    if wrap is not None:
        floor[:, ~wrap] = 0.0
    if one_product:
        wrapped = pos - floor @ box
    else:
        wrapped = pos - torch.bmm(floor.unsqueeze(1), boxes.index_select(0, batch)).squeeze(1)
    return CellFrame(boxes, frac - floor, floor.to(torch.long), wrapped, volume, heights)


def cell_geometry(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse [S, 3, 3], volume |det| [S] and heights h_k [S, 3] of cells ``boxes`` [S, 3, 3]
    (rows a, b, c) from the cross products b x c, c x a, a x b: the inverse's columns are
    those over det. No factorisation, so nothing is checked on the host (a singular cell gives
    inf; the callers reject those before)."""
    a, b, c = boxes.unbind(1)
    crosses = torch.stack((torch.linalg.cross(b, c), torch.linalg.cross(c, a), torch.linalg.cross(a, b)), dim=2)
    det = (a * crosses[:, :, 0]).sum(dim=1)
    volume = det.abs()
    return crosses / det[:, None, None], volume, volume[:, None] / crosses.norm(dim=1)


def bin_coords(u: Tensor, nbins: Tensor, batch: Tensor) -> Tensor:
    """[N, 3] int64 bin of each atom: ``floor(u)`` clamped to 0 .. n_k - 1, for ``u`` [N, 3]
    the atoms' coordinates in bin widths from the grid's origin and ``nbins`` [S, 3] the bins
    per axis of each system (float64)."""
    u = torch.nan_to_num(u, nan=0.0)  # a non-finite position (flagged elsewhere) must not index outside
    return torch.minimum(torch.floor(u).clamp(min=0), (nbins - 1).index_select(0, batch)).to(torch.long)


class BinnedAtoms(NamedTuple):
    """Atoms sorted by global bin key."""

    key: Tensor  # [N] int64 global bin key of each atom (original order)
    order: Tensor  # [N] int64 atoms in key order (stable): sorted index -> original index
    base: Tensor  # [S] int64 first global bin key of each system
    n_bins: int  # number of bins of all systems together


def sort_into_bins(coords: Tensor, nbins: Tensor, batch: Tensor, n_bins: Optional[int] = None) -> BinnedAtoms:
    """Global bin keys ``base[s] + (b0 n_1 + b1) n_2 + b2`` of the atoms' bin coordinates
    ``coords`` [N, 3] (int64) on grids of ``nbins`` [S, 3] (int64) bins, and the atoms sorted
    by them, so that every bin, and every run of consecutive b2 bins, is a contiguous range.
    ``n_bins``, the total, is read from the device unless given."""
    bins_per_sys = nbins[:, 0] * nbins[:, 1] * nbins[:, 2]
    base = torch.cumsum(bins_per_sys, 0) - bins_per_sys
    nbs = nbins.index_select(0, batch)
    key = base.index_select(0, batch) + (coords[:, 0] * nbs[:, 1] + coords[:, 1]) * nbs[:, 2] + coords[:, 2]
    total = int(bins_per_sys.sum()) if n_bins is None else n_bins
    return BinnedAtoms(key, torch.argsort(key, stable=True), base, total)


def bin_starts(key: Tensor, n_bins: int) -> Tensor:
    """[n_bins + 1] int64: the first sorted atom of every bin (a dense prefix count of the
    bin keys ``key`` [N], in any order); bin k holds the sorted atoms start[k] .. start[k+1] - 1."""
    start = torch.zeros(n_bins + 1, dtype=torch.long, device=key.device)
    start.index_add_(0, key + 1, torch.ones_like(key))  # no bincount: its size would be read from the device
    return torch.cumsum(start, 0)
