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
used as is (e.g. inside a CUDA graph: :func:`planned_search` keeps K fixed).

Algorithm
---------
0. (:func:`plan_search`, once per topology, reads sizes on the host) The grid below (bins per
   axis, reach, bin-id blocks, open systems' origin and widths) and K, as a
   :class:`SearchPlan`. Every later step runs 1 and 2 on it with no host sync
   (:func:`planned_search`) and flags on the device what the plan no longer covers.
1. (Triton, float64, :func:`fastnnp.kernels.common.atom_bins.bin_atoms`: one registered op)
   With a box, fractional coordinates are wrapped into [0, 1), the integer part s_i is
   remembered and the search kernel gets the wrapped Cartesian positions (torch reference:
   :func:`fastnnp.neighbors.cells.cell_frame`, batched per atom). Along every
   lattice axis k a system gets n_k = max(1, floor(h_k / cutoff)) bins, h_k being the cell
   height perpendicular to face k; open boundaries bin the atoms' bounding box, grown by a
   cutoff on every side, along x, y, z with bins at least a cutoff wide (atoms that later
   leave it are clamped into the edge bins: still complete, since bins are a cutoff wide). A system has at most 2 bins per atom (coarser bins are
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
   up to a multiple of 16. If a count exceeds K (flagged on the device), the kernel runs
   again with K = the largest count + 1/8, rounded up to a multiple of 16: nothing is ever
   truncated (:func:`neighbor_table` does it at once; a step after it, :mod:`fastnnp.step`).
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...neighbors.cells import cell_geometry
from ...neighbors.checks import check_search_inputs
from ...neighbors.table import NeighborTable, table_vectors
from ...status import StepStatus, status_tensor
from .atom_bins import bin_atoms
from .compile_case import CompileCase
from .op_args import constant

__all__ = ["NeighborTable", "SearchPlan", "neighbor_table", "plan_search", "planned_search", "table_vectors"]

# Senders tested per step of the kernel's inner loop.
_BLOCK = 32
# Capacity estimate: expected neighbours (density x sphere volume) times this factor.
_CAPACITY_MARGIN = 1.25
# From this many atoms on the planned search numbers its tables in the bin-sorted order: the
# rows the kernels gather per edge (TensorNet's [10, F] components: 5 kB an atom at F = 128)
# then outgrow the H200's 50 MB L2, and neighbours near in space become near in memory.
SORT_MIN_ATOMS = 8192
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
    SORTED: tl.constexpr,  # number the table's rows and senders in the sorted order
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
    if SORTED:
        i = a.to(tl.int32)
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
                    if SORTED:
                        tl.store(nbr_ptr + off, j.to(tl.int32), mask=write)
                    else:
                        tl.store(nbr_ptr + off, tl.load(atom_ptr + j, mask=write, other=0), mask=write)
                    if PERIODIC:
                        # image relative to the positions as given: t + s_i - s_j
                        sj = tl.load(shift_ptr + 4 * j[:, None] + xyz[None, :], mask=write[:, None], other=0)
                        w3 = write[:, None] & (xyz[None, :] < 3)
                        tl.store(img_ptr + 3 * off[:, None] + xyz[None, :], img[None, :] - sj, mask=w3)
                    count += tl.sum(kept, 0)
    tl.store(count_ptr + i, count)


class SearchPlan(NamedTuple):
    """What a search keeps for one topology (atom count, systems, cell shape, cutoffs) so that
    it runs with no host sync: the grid (bins per axis, reach, block of bin ids of each system;
    for open boundaries also its origin and bin widths) and the table width K. Step 1 of the
    module docstring, computed from the positions (and cell) it was planned with."""

    n_atoms: int
    n_systems: int
    periodic: bool
    shared_box: bool  # a (3, 3) box for every system
    cutoff_upper: float
    cutoff_lower: float
    capacity: int  # K
    n_bins: int  # bins of all systems together
    batch: Tensor  # [N] int64, as planned
    nbins: Tensor  # [S, 3] float64 bins per axis
    nbins_int: Tensor  # [S, 3] int64, the same
    reach: Tensor  # [S, 3] int64 search range m per axis, in bins
    base: Tensor  # [S] int64 first global bin id of each system
    origin: Tensor  # [S, 3] float64 grid origin (open boundaries; else 0)
    width: Tensor  # [S, 3] float64 bin widths (open boundaries; else 1)
    open_box: Tensor  # [S, 3, 4] zeros in the kernel dtype: the open search's box argument
    cut: Tensor  # [2] squared cutoffs (upper, lower) in the kernel dtype
    bin_ids: Tensor  # [n_bins + 1] int64 0 .. n_bins (whose first atoms the binning finds)
    sort_atoms: bool  # number the table in the bin-sorted order (:func:`planned_search`)
    atom_ids: Tensor  # [N] int64 0 .. N - 1


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

    This checks its inputs and reads the table's largest count on the host; a step that must
    not sync plans once (:func:`plan_search`) and calls :func:`planned_search`.
    """
    pos, batch, box, _, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, None)
    if pos.shape[0] == 0:
        return _empty_table(0, _checked_capacity(capacity) or 16, pos.device)
    plan = plan_search(pos, batch, cu, cl, box, capacity)
    table, _, need = planned_search(plan, pos, box)
    if int(need) > plan.capacity:  # overflow: search again with room for every neighbour
        table, _, _ = planned_search(plan._replace(capacity=wider_capacity(int(need))), pos, box)
    return table


def wider_capacity(need: int) -> int:
    """The table width after an overflow whose largest count was ``need``: 1/8 more, rounded up to 16."""
    return _round16(need + need // 8)


def _checked_capacity(capacity) -> int | None:
    if capacity is not None and (isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1):
        raise ValueError(f"capacity must be a positive integer, got {capacity}")
    return None if capacity is None else int(capacity)


def planned_search(plan: SearchPlan, pos: Tensor, box: Tensor | None) -> tuple[NeighborTable, Tensor, Tensor]:
    """The table of ``pos`` [N, 3] (and ``box``, of the plan's shape) on the plan's grid, with no
    host sync, a 0-d int32 status on the device (:class:`fastnnp.status.StepStatus` bits) and
    the largest neighbour count (0-d int32, for the width of a replan). Status bits:
    OVERFLOW where some count exceeds K (that row then lists, and counts, only K of the
    atom's neighbours), STALE where a periodic cell's bins became narrower than the cutoff (pairs may
    be missing), DRIFT where atoms of an open system left the planned grid (the table is
    complete, the search slower). The caller acts on it after the step: replan and recompute
    for OVERFLOW or STALE. Inputs are not checked here: the plan's were.

    With ``plan.sort_atoms`` the table numbers the atoms in the search's bin-sorted order
    (``order``, ``inverse``: :class:`~fastnnp.neighbors.table.NeighborTable`), so that a
    receiver's senders are near it in memory."""
    with torch.no_grad():
        bins, stale, drift = bin_atoms(plan, constant(pos), None if box is None else constant(box))
        neighbors, images, counts = torch.ops.fastnnp.neighbor_search(
            bins.pos, bins.atom, bins.bin, bins.shift, bins.sys, plan.nbins_int, plan.reach, plan.base,
            bins.box, bins.bin_start, plan.cut, plan.capacity, plan.periodic, plan.sort_atoms,
        )
        need = counts.max()
        status = status_tensor({StepStatus.OVERFLOW: need > plan.capacity, StepStatus.STALE: stale, StepStatus.DRIFT: drift})
        # an overflowed row lists K neighbours: the consumers never read past the table
        counts = counts.clamp(max=plan.capacity)
        if not plan.sort_atoms:
            return NeighborTable(neighbors, images, counts), status, need
        order = bins.atom.long()
        inverse = torch.empty_like(order).scatter_(0, order, plan.atom_ids)
    return NeighborTable(neighbors, images, counts, order, inverse), status, need


@torch.library.custom_op("fastnnp::neighbor_search", mutates_args=())
def _neighbor_search_op(
    pos: Tensor, atom: Tensor, bin: Tensor, shift: Tensor, sys: Tensor, nbins: Tensor, reach: Tensor, base: Tensor,
    box: Tensor, bin_start: Tensor, cut: Tensor, capacity: int, periodic: bool, sorted_order: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The search kernel (step 2 of the module docstring) on bin-sorted inputs: (neighbors
    [N, K] int32, images [N, K, 3] int32, counts [N] int32; counts may exceed K). Rows and
    senders are given atom indices, or with ``sorted_order`` sorted ones."""
    table = _empty_table(pos.shape[0], capacity, pos.device)
    if pos.shape[0] > 0:
        _neighbor_kernel[(pos.shape[0],)](
            pos, atom, bin, shift, sys, nbins, reach, base, box, bin_start, cut,
            table.neighbors, table.images, table.counts, capacity,
            PERIODIC=periodic, SORTED=sorted_order, BLOCK=_BLOCK, num_warps=1,
        )  # fmt: skip
    return table.neighbors, table.images, table.counts


@_neighbor_search_op.register_fake
def _(pos, atom, bin, shift, sys, nbins, reach, base, box, bin_start, cut, capacity, periodic, sorted_order):
    n = pos.shape[0]
    i32 = torch.int32
    return pos.new_empty(n, capacity, dtype=i32), pos.new_empty(n, capacity, 3, dtype=i32), pos.new_empty(n, dtype=i32)


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


def plan_search(
    pos: Tensor, batch: Tensor, cu: float, cl: float, box: Tensor | None, capacity: int | None = None,
    sort_atoms: bool | None = None,
) -> SearchPlan:
    """The grid and table width for ``pos`` [N, 3] (N > 0), ``batch`` [N] int64 and ``box``
    (None, (3, 3) or (>= S, 3, 3)), inputs as :func:`check_search_inputs` returns them (step 1
    and 3 of the module docstring). Reads sizes from the device: done once per topology.
    ``sort_atoms``: number the tables in the bin-sorted order (default: from
    :data:`SORT_MIN_ATOMS` atoms on).

    Open boundaries: the grid spans the atoms' bounding box plus a cutoff on every side (room
    to move before DRIFT is flagged; atoms outside it are clamped into the edge bins, which
    keeps the search complete because bins are at least a cutoff wide)."""
    capacity = _checked_capacity(capacity)
    device = pos.device
    f64, i64 = torch.float64, torch.long
    p = pos.detach().to(f64)
    n_sys = int(batch.max()) + 1
    per_sys = torch.zeros(n_sys, dtype=f64, device=device).index_add_(0, batch, torch.ones_like(p[:, 0]))
    # Bins at least this wide; the small margin keeps rounding in the binning harmless.
    cs = cu * (1 + 1e-6)
    origin = torch.zeros(n_sys, 3, dtype=f64, device=device)
    width = torch.ones(n_sys, 3, dtype=f64, device=device)
    if box is None:
        idx3 = batch.unsqueeze(1).expand(-1, 3)
        lo = origin.scatter_reduce(0, idx3, p, "amin", include_self=False) - cs
        hi = origin.scatter_reduce(0, idx3, p, "amax", include_self=False) + cs
        extent = hi - lo
        nb = _cap_bins(torch.floor(extent / cs).clamp(min=1), per_sys)
        origin, width = lo, (extent / nb).clamp(min=cs)
        reach = torch.ones_like(nb)
        # atoms at the system's density over its bounding box (each side at least a cutoff)
        volume = (extent - 2 * cs).clamp(min=cu).prod(dim=1)
    else:
        b64 = box.detach().to(f64).reshape(-1, 3, 3)[:n_sys] if box.dim() == 3 else box.detach().to(f64)[None]
        _, volume, heights = cell_geometry(b64.expand(n_sys, 3, 3))
        nb = _cap_bins(torch.floor(heights / cs).clamp(min=1), per_sys)
        reach = torch.ceil(cs * nb / heights)
    offsets = int((2 * reach + 1).prod(dim=1).max())
    if offsets > _MAX_BIN_OFFSETS:
        raise ValueError(
            f"box is too thin for the cutoff {cu:g}: the search would visit {offsets} periodic "
            f"images of the cell (more than {_MAX_BIN_OFFSETS})"
        )
    nb_int = nb.to(i64).contiguous()
    bins_per_sys = nb_int.prod(dim=1)
    n_bins = int(bins_per_sys.sum())
    # Capacity: expected neighbours at the system's mean density (an open system has at most
    # its atom count - 1).
    expected = per_sys / volume * (4.0 / 3.0 * math.pi * cu**3) * _CAPACITY_MARGIN
    if box is None:
        expected = torch.minimum(expected, per_sys - 1)
    kdt = pos.dtype if pos.dtype == f64 else torch.float32
    return SearchPlan(
        n_atoms=pos.shape[0], n_systems=n_sys, periodic=box is not None, shared_box=box is not None and box.dim() == 2,
        cutoff_upper=cu, cutoff_lower=cl, capacity=capacity or _round16(float(expected.max())),
        n_bins=n_bins, batch=batch, nbins=nb, nbins_int=nb_int, reach=reach.to(i64).contiguous(),
        base=(torch.cumsum(bins_per_sys, 0) - bins_per_sys).contiguous(), origin=origin, width=width,
        open_box=torch.zeros(n_sys, 3, 4, dtype=kdt, device=device),
        cut=torch.tensor([cu * cu, cl * cl], dtype=kdt, device=device),
        bin_ids=torch.arange(n_bins + 1, dtype=i64, device=device),
        sort_atoms=pos.shape[0] >= SORT_MIN_ATOMS if sort_atoms is None else bool(sort_atoms),
        atom_ids=torch.arange(pos.shape[0], dtype=i64, device=device),
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


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The periodic search kernel (:mod:`fastnnp.kernels.compile_check`), numbering its table
    in the given and in the bin-sorted order; shape-independent."""
    pointers = {
        "atom_ptr": "*i32", "bin_ptr": "*i64", "shift_ptr": "*i32", "sys_ptr": "*i32", "nbins_ptr": "*i64",
        "reach_ptr": "*i64", "base_ptr": "*i64", "bin_start_ptr": "*i64", "nbr_ptr": "*i32", "img_ptr": "*i32",
        "count_ptr": "*i32",
    }
    return [CompileCase(_neighbor_kernel, dict(PERIODIC=True, SORTED=ordered, BLOCK=_BLOCK), pointers, num_warps=1)
            for ordered in (False, True)]
