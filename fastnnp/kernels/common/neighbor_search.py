"""Cell-list neighbour search on the GPU (Triton), output as a fixed-width table per receiver.

Layout
------
A :class:`~fastnnp.neighbors.table.NeighborTable` (defined in :mod:`fastnnp.neighbors.table`,
re-exported here with :func:`table_vectors`), for N atoms and a capacity K:

* ``neighbors`` [N, K] int32: row i lists the senders j of receiver i in slots 0 .. counts[i]-1
  (in search order, not sorted); the padding slots hold i itself.
* ``images`` [N, K, 3] int32: lattice translation applied to the sender, in units of the box
  rows, so that the edge vector is ``pos[i] - pos[j] - images @ box[system of i]``; 0 for
  padding and for open boundaries.
* ``counts`` [N] int32: number of neighbours of each receiver.

The pairs are those of :func:`fastnnp.neighbors.neighbor_list` with ``loop=False``:
``cutoff_lower <= |edge vector| < cutoff_upper``, both directions of every pair, periodic
images of an atom itself included (cells thinner than the cutoff), the self pair excluded.
Padding entries give a zero vector in :func:`table_vectors`, so the fixed-size table can be
used as is (e.g. inside a CUDA graph: pass the returned K back as ``capacity``).

Algorithm
---------
1. (torch, float64, :func:`_bin_atoms`) With a box, fractional coordinates are wrapped into
   [0, 1), the integer part s_i is remembered and the kernel gets the wrapped Cartesian
   positions (:func:`fastnnp.neighbors.cells.cell_frame`, batched per atom). Along every
   lattice axis k a system gets n_k = max(1, floor(h_k / cutoff)) bins, h_k being the cell
   height perpendicular to face k; open boundaries bin the atoms' bounding box along x, y, z
   with bins at least a cutoff wide. A system has at most 2 bins per atom (coarser bins are
   only slower). Two atoms closer than the cutoff are at most m_k = ceil(cutoff n_k / h_k)
   bins apart: 1, more for a cell thinner than the cutoff. Each system owns a contiguous
   block of global bin ids (z fastest); atoms are sorted by bin and ``bin_start`` gives the
   atom range of every bin (:mod:`fastnnp.neighbors.cells`).
2. (Triton) One program per receiver, in bin-sorted order. It visits the (2m_0+1)(2m_1+1)
   neighbouring bin columns (periodic indices wrapped, the wrap counts giving the lattice
   translation t of the senders; open columns off the grid are empty); the z bins
   b_2-m_2 .. b_2+m_2 of a column are one contiguous atom range, split where a periodic
   index wraps. Senders are tested in blocks of BLOCK; survivors are appended to the
   receiver's row at ``count + exclusive prefix sum``, written only below K, while counting
   on past K. The stored image is t + s_i - s_j, so it refers to the positions as given.
   Index arithmetic (bins, row offsets i * K + slot) is int64.
3. K defaults to 1.25 x the expected neighbour count at each system's mean density (open
   systems: over the bounding box, each side at least a cutoff; at most N_s - 1), rounded
   up to a multiple of 16. If a count exceeds K, the kernel runs again with K = the largest
   count + 1/8, rounded up to a multiple of 16: nothing is ever truncated.
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...neighbors.cells import bin_coords, bin_starts, cell_frame, sort_into_bins
from ...neighbors.checks import check_search_inputs
from ...neighbors.table import NeighborTable, table_vectors
from .compile_case import CompileCase

__all__ = ["NeighborTable", "neighbor_table", "table_vectors"]

# Senders tested per step of the kernel's inner loop.
_BLOCK = 32
# Capacity estimate: expected neighbours (density x sphere volume) times this factor.
_CAPACITY_MARGIN = 1.25
# Refuse nearly degenerate cells that need more neighbouring bins than this.
_MAX_BIN_OFFSETS = 1_000_000


@triton.jit
def _neighbor_kernel(
    pos_ptr,  # [N, 4] wrapped positions (4th component 0), bin-sorted
    atom_ptr,  # [N] int32 original index of each sorted atom
    bin_ptr,  # [N, 3] int64 bin coordinates, sorted
    shift_ptr,  # [N, 4] int32 lattice shift s removed by the wrapping (4th 0), sorted
    sys_ptr,  # [N] int32 system of each sorted atom
    nbins_ptr,  # [S, 3] int64 bins per axis
    reach_ptr,  # [S, 3] int64 search range m per axis, in bins
    base_ptr,  # [S] int64 first global bin id of each system
    box_ptr,  # [S, 3, 4] lattice vectors (rows, 4th component 0), unused for open boundaries
    bin_start_ptr,  # [n_bins + 1] int64 first sorted atom of each bin
    cut_ptr,  # [2] squared cutoffs (upper, lower), in the position dtype
    nbr_ptr,  # out [N, K] int32
    img_ptr,  # out [N, K, 3] int32
    count_ptr,  # out [N] int32
    K,
    PERIODIC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program per receiver: fills its row of the table (module docstring, step 2)."""
    a = tl.program_id(0).to(tl.int64)  # receiver, in sorted order
    xyz = tl.arange(0, 4)  # vectors have 4 components, the 4th is 0
    i = tl.load(atom_ptr + a)
    s = tl.load(sys_ptr + a)
    ri = tl.load(pos_ptr + 4 * a + xyz)
    b0 = tl.load(bin_ptr + 3 * a)
    b1 = tl.load(bin_ptr + 3 * a + 1)
    b2 = tl.load(bin_ptr + 3 * a + 2)
    n0 = tl.load(nbins_ptr + 3 * s)
    n1 = tl.load(nbins_ptr + 3 * s + 1)
    n2 = tl.load(nbins_ptr + 3 * s + 2)
    m0 = tl.load(reach_ptr + 3 * s)
    m1 = tl.load(reach_ptr + 3 * s + 1)
    m2 = tl.load(reach_ptr + 3 * s + 2)
    base = tl.load(base_ptr + s)
    cu2 = tl.load(cut_ptr)
    cl2 = tl.load(cut_ptr + 1)
    row = i.to(tl.int64) * K
    lane = tl.arange(0, BLOCK)
    if PERIODIC:
        si = tl.load(shift_ptr + 4 * a + xyz)
        box_a = tl.load(box_ptr + 12 * s + xyz)
        box_b = tl.load(box_ptr + 12 * s + 4 + xyz)
        box_c = tl.load(box_ptr + 12 * s + 8 + xyz)
        # Bin indices lie in [-m, n - 1 + m]; adding q * n makes them non-negative, so the
        # wrap count is an integer division of non-negative numbers (floor = truncation).
        q0 = m0 // n0 + 1
        q1 = m1 // n1 + 1
        q2 = m2 // n2 + 1
        # images along c spanned by the z bins b2 - m2 .. b2 + m2
        tz_lo = (b2 - m2 + q2 * n2) // n2 - q2
        tz_hi = (b2 + m2) // n2
    else:
        tz_lo = 0
        tz_hi = 0
    count = tl.zeros([], dtype=tl.int64)  # neighbours found so far (may exceed K)
    for d0 in range(-m0, m0 + 1):
        c0 = b0 + d0
        if PERIODIC:
            t0 = (c0 + q0 * n0) // n0 - q0
            c0 -= t0 * n0
            p = ri - t0 * box_a
        for d1 in range(-m1, m1 + 1):
            c1 = b1 + d1
            if PERIODIC:
                t1 = (c1 + q1 * n1) // n1 - q1
                c1 -= t1 * n1
                q = p - t1 * box_b
                column = base + (c0.to(tl.int64) * n1 + c1) * n2
            else:  # columns outside the grid are empty
                column_ok = (c0 >= 0) & (c0 < n0) & (c1 >= 0) & (c1 < n1)
                column = tl.where(column_ok, base + (c0.to(tl.int64) * n1 + c1) * n2, base)
            # The z bins b2 - m2 .. b2 + m2 of a column are contiguous in the sorted order; with
            # periodic boundaries they are split where they wrap, each piece with its image t2.
            for t2 in range(tz_lo, tz_hi + 1):
                z_lo = tl.maximum(b2 - m2, t2 * n2) - t2 * n2
                z_hi = tl.minimum(b2 + m2, t2 * n2 + n2 - 1) - t2 * n2
                lo = tl.load(bin_start_ptr + column + z_lo)
                hi = tl.load(bin_start_ptr + column + z_hi + 1)
                if PERIODIC:
                    r = q - t2 * box_c  # receiver minus the lattice translation of the senders
                    img = tl.where(xyz == 0, t0, tl.where(xyz == 1, t1, t2)) + si
                    # the self pair (sorted index a) is excluded, the atom's own images are not
                    excluded = tl.where((t0 == 0) & (t1 == 0) & (t2 == 0), a, -1)
                else:
                    hi = tl.where(column_ok, hi, lo)
                    r = ri
                    excluded = a
                for start in range(lo, hi, BLOCK):
                    j = start + lane
                    valid = j < hi
                    pj = tl.load(pos_ptr + 4 * j[:, None] + xyz[None, :], mask=valid[:, None], other=0.0)
                    d = r[None, :] - pj
                    d2 = tl.sum(d * d, axis=1)
                    keep = valid & (d2 < cu2) & (d2 >= cl2) & (j != excluded)
                    kept = keep.to(tl.int64)
                    slot = count + tl.cumsum(kept, 0) - kept
                    write = keep & (slot < K)
                    off = row + slot
                    tl.store(nbr_ptr + off, tl.load(atom_ptr + j, mask=write, other=0), mask=write)
                    if PERIODIC:
                        # image relative to the positions as given: t + s_i - s_j
                        sj = tl.load(shift_ptr + 4 * j[:, None] + xyz[None, :], mask=write[:, None], other=0)
                        w3 = write[:, None] & (xyz[None, :] < 3)
                        tl.store(img_ptr + 3 * off[:, None] + xyz[None, :], img[None, :] - sj, mask=w3)
                    count += tl.sum(kept, 0)
    tl.store(count_ptr + i, count)


class _Bins(NamedTuple):
    """Kernel inputs from the binning step; atom arrays are in bin-sorted order."""

    pos: Tensor  # [N, 4] wrapped positions, 4th component 0 (kernel dtype)
    atom: Tensor  # [N] int32 original atom index
    bin: Tensor  # [N, 3] int64 bin coordinates
    shift: Tensor  # [N, 4] int32 lattice shift removed by the wrapping, 4th component 0
    sys: Tensor  # [N] int32 system
    nbins: Tensor  # [S, 3] int64
    reach: Tensor  # [S, 3] int64
    base: Tensor  # [S] int64
    box: Tensor  # [S, 3, 4] lattice vectors, 4th component 0 (kernel dtype)
    bin_start: Tensor  # [n_bins + 1] int64
    capacity: int  # estimated K


def neighbor_table(
    pos: Tensor,
    batch: Tensor,
    cutoff_upper: float,
    cutoff_lower: float = 0.0,
    box: Tensor | None = None,
    capacity: int | None = None,
) -> NeighborTable:
    """All pairs with ``cutoff_lower <= d < cutoff_upper`` as a table grouped by receiver.

    Args:
        pos: [N, 3] positions (float32 or float64; other floating types are searched in float32).
        batch: [N] integer system index of every atom, systems 0 .. S-1.
        cutoff_upper: exclusive upper cutoff (position units), > 0.
        cutoff_lower: inclusive lower cutoff, < cutoff_upper.
        box: None (open boundaries), (3, 3) / (1, 3, 3) shared by all systems or (S, 3, 3);
            rows are the lattice vectors, every axis is periodic.
        capacity: K, the table width; default an estimate from the density. If some atom has
            more neighbours the search is repeated with a larger K (never truncated), so the
            returned K can be larger; pass it back next time to keep the buffers' size.

    Raises:
        ValueError: bad shapes, singular or non-finite box, non-finite positions, bad cutoffs
            or capacity, or a cell so thin that the search would be degenerate.
    """
    pos, batch, box, _, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, None)
    if capacity is not None and (isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1):
        raise ValueError(f"capacity must be a positive integer, got {capacity}")
    n = pos.shape[0]
    if n == 0:
        return _empty_table(0, capacity or 16, pos.device)
    with torch.no_grad():
        bins = _bin_atoms(pos.detach(), batch, box, cu)
        k = int(capacity) if capacity is not None else bins.capacity
        table = _search(bins, n, k, cu, cl, box is not None)
        need = int(table.counts.max())
        if need > k:  # overflow: search again with room for every neighbour
            table = _search(bins, n, _round16(need + need // 8), cu, cl, box is not None)
    return table


def _search(bins: _Bins, n: int, k: int, cu: float, cl: float, periodic: bool) -> NeighborTable:
    """Run the kernel with table width k (the returned counts may exceed k)."""
    table = _empty_table(n, k, bins.pos.device)
    cut = torch.tensor([cu * cu, cl * cl], dtype=bins.pos.dtype, device=bins.pos.device)
    _neighbor_kernel[(n,)](
        bins.pos, bins.atom, bins.bin, bins.shift, bins.sys, bins.nbins, bins.reach, bins.base, bins.box,
        bins.bin_start, cut, table.neighbors, table.images, table.counts, k,
        PERIODIC=periodic, BLOCK=_BLOCK, num_warps=1,
    )  # fmt: skip
    return table


def _empty_table(n: int, k: int, device: torch.device) -> NeighborTable:
    """A table with every slot padding: neighbors[i] = i, images 0, counts 0."""
    rows = torch.arange(n, dtype=torch.int32, device=device)
    return NeighborTable(
        rows.unsqueeze(1).repeat(1, k),
        torch.zeros(n, k, 3, dtype=torch.int32, device=device),
        torch.zeros(n, dtype=torch.int32, device=device),
    )


def _round16(x: float) -> int:
    return max(16, 16 * math.ceil(x / 16))


def _bin_atoms(pos: Tensor, batch: Tensor, box: Tensor | None, cu: float) -> _Bins:
    """Bins, search ranges and bin-sorted atom arrays for the kernel (step 1 of the module
    docstring), plus the capacity estimate. ``box`` is None, (3, 3) or (>= S, 3, 3)."""
    device = pos.device
    f64, i64, i32 = torch.float64, torch.long, torch.int32
    n = pos.shape[0]
    n_sys = int(batch.max()) + 1
    per_sys = torch.bincount(batch, minlength=n_sys)
    p = pos.to(f64)
    # Bins at least this wide; the small margin keeps rounding in the binning harmless.
    cs = cu * (1 + 1e-6)

    if box is None:
        idx3 = batch.unsqueeze(1).expand(n, 3)
        lo = torch.zeros(n_sys, 3, dtype=f64, device=device).scatter_reduce(0, idx3, p, "amin", include_self=False)
        hi = torch.zeros(n_sys, 3, dtype=f64, device=device).scatter_reduce(0, idx3, p, "amax", include_self=False)
        extent = hi - lo
        nb = _cap_bins(torch.floor(extent / cs).clamp(min=1), per_sys)
        width = (extent / nb).clamp(min=cs)
        u = (p - lo.index_select(0, batch)) / width.index_select(0, batch)
        reach = torch.ones_like(nb)
        shift = torch.zeros(n, 3, dtype=i64, device=device)
        wrapped = p
        boxes = torch.zeros(n_sys, 3, 3, dtype=f64, device=device)
        volume = extent.clamp(min=cu).prod(dim=1)
    else:
        b64 = box.detach().to(f64).reshape(-1, 3, 3)
        # every atom's cell applied by a batched product, even for a shared box
        cells = cell_frame(p, batch, b64[0] if b64.shape[0] == 1 else b64, n_sys, batched=True)
        shift, wrapped, volume, heights, boxes = cells.shift, cells.wrapped, cells.volume, cells.heights, cells.boxes
        nb = _cap_bins(torch.floor(heights / cs).clamp(min=1), per_sys)
        reach = torch.ceil(cs * nb / heights)
        u = cells.frac * nb.index_select(0, batch)
    offsets = int((2 * reach + 1).prod(dim=1).max())
    if offsets > _MAX_BIN_OFFSETS:
        raise ValueError(
            f"box is too thin for the cutoff {cu:g}: the search would visit {offsets} periodic "
            f"images of the cell (more than {_MAX_BIN_OFFSETS})"
        )

    nb_i = nb.to(i64)
    binc = bin_coords(u, nb, batch)
    binned = sort_into_bins(binc, nb_i, batch)
    order = binned.order

    # Capacity: expected neighbours at the system's mean density (an open system has at most
    # its atom count - 1).
    expected = per_sys / volume * (4.0 / 3.0 * math.pi * cu**3) * _CAPACITY_MARGIN
    if box is None:
        expected = torch.minimum(expected, (per_sys - 1).to(f64))
    kdt = pos.dtype if pos.dtype == f64 else torch.float32
    return _Bins(
        pos=_pad4(wrapped.index_select(0, order).to(kdt)),
        atom=order.to(i32),
        bin=binc.index_select(0, order).contiguous(),
        shift=_pad4(shift.index_select(0, order).to(i32)),
        sys=batch.index_select(0, order).to(i32),
        nbins=nb_i.contiguous(),
        reach=reach.to(i64).contiguous(),
        base=binned.base.contiguous(),
        box=_pad4(boxes.to(kdt)),
        bin_start=bin_starts(binned.key, binned.n_bins),
        capacity=_round16(float(expected.max())),
    )


def _cap_bins(nb: Tensor, atoms: Tensor) -> Tensor:
    """Scale the bins per axis [S, 3] down (never below 1) so that a system has at most
    2 bins per atom; coarser bins only cost more candidates."""
    limit = (2 * atoms).clamp(min=1).to(nb.dtype)
    # Each pass shrinks the axes with more than one bin by a common factor; it meets the limit
    # unless an axis drops to 1 bin, so three passes always do.
    for _ in range(3):
        split = nb > 1
        factor = (limit / nb.prod(dim=1)).clamp(max=1).pow(1.0 / split.sum(dim=1).clamp(min=1))
        nb = torch.where(split, torch.floor(nb * factor.unsqueeze(1)).clamp(min=1), nb)
    return nb


def _pad4(x: Tensor) -> Tensor:
    """[..., 3] -> contiguous [..., 4] with a zero 4th component (aligned vector loads)."""
    return torch.nn.functional.pad(x, (0, 1)).contiguous()


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The periodic search kernel (:mod:`fastnnp.kernels.compile_check`); shape-independent."""
    pointers = {
        "atom_ptr": "*i32", "bin_ptr": "*i64", "shift_ptr": "*i32", "sys_ptr": "*i32", "nbins_ptr": "*i64",
        "reach_ptr": "*i64", "base_ptr": "*i64", "bin_start_ptr": "*i64", "nbr_ptr": "*i32", "img_ptr": "*i32",
        "count_ptr": "*i32",
    }
    return [CompileCase(_neighbor_kernel, dict(PERIODIC=True, BLOCK=_BLOCK), pointers, num_warps=1)]
