"""Step 1 of the neighbour search (:mod:`~fastnnp.kernels.common.neighbor_search`) fused:
the atoms binned on a planned grid and sorted by bin, in one registered op.

``fastnnp::bin_atoms`` runs two Triton kernels around one sort, after (with cells) a kernel
that gives each system's float64 cell and inverse, the search's padded cell, and STALE where a
cell's heights became too small for the planned reach. Per atom, in float64: with a cell, the fractional coordinates f = pos @ box^-1 of its system, the lattice shift
s = floor(f), the wrapped position pos - s @ box and u = (f - s) n; for open boundaries
u = (pos - origin) / width and no shift. The bin is floor(u) clamped to 0 .. n_k - 1 (NaN to
bin 0: a non-finite position is flagged elsewhere, it must not index outside), the global key
base + (b0 n1 + b1) n2 + b2. The first kernel writes the keys and whether an open system's atom
left its grid (DRIFT); ``torch.sort`` orders them (stable); the second kernel recomputes each
sorted atom's frame and writes the search kernel's inputs in that order, and
``torch.searchsorted`` gives every bin's first atom. Nothing reads the device from the host.

:func:`reference_bins` is the same step in torch (float64, :mod:`fastnnp.neighbors.cells`),
the reference the kernels are tested against.
"""

from typing import TYPE_CHECKING, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...neighbors.cells import bin_coords, bin_starts, cell_frame, sort_into_bins
from .compile_case import CompileCase
from .interpreter import interpreting

if TYPE_CHECKING:
    from .neighbor_search import SearchPlan

GPU_BLOCK = 128
INTERPRETER_BLOCK = 1024
CELL_BLOCK = 32  # systems per program of the cell kernel


class Bins(NamedTuple):
    """Kernel inputs from the binning step; atom arrays are in bin-sorted order."""

    pos: Tensor  # [N, 4] wrapped positions, 4th component 0 (kernel dtype)
    atom: Tensor  # [N] int32 original atom index
    bin: Tensor  # [N, 3] int64 bin coordinates
    shift: Tensor  # [N, 4] int32 lattice shift removed by the wrapping, 4th component 0
    sys: Tensor  # [N] int32 system
    box: Tensor  # [S, 3, 4] lattice vectors, 4th component 0 (kernel dtype)
    bin_start: Tensor  # [n_bins + 1] int64


@triton.jit
def _row(ptr, s, k: tl.constexpr, mask):
    """Row k (x, y, z) of the [S, 3, 3] matrices at ``ptr`` for the systems ``s``, in float64."""
    base = ptr + s * 9 + 3 * k
    return (tl.load(base, mask=mask, other=0.0).to(tl.float64), tl.load(base + 1, mask=mask, other=0.0).to(tl.float64),
            tl.load(base + 2, mask=mask, other=0.0).to(tl.float64))


@triton.jit
def _cross(a, b):
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


@triton.jit
def _cell_axis(inv_ptr, box64_ptr, padded_ptr, nb_ptr, reach_ptr, s, k: tl.constexpr, row, cross, det, limit, mask):
    """Row k of the cell (float64 and padded), column k of the inverse; whether axis k is stale."""
    tl.store(inv_ptr + s * 9 + k, cross[0] / det, mask=mask)
    tl.store(inv_ptr + s * 9 + 3 + k, cross[1] / det, mask=mask)
    tl.store(inv_ptr + s * 9 + 6 + k, cross[2] / det, mask=mask)
    kind = padded_ptr.dtype.element_ty
    for i in tl.static_range(3):
        tl.store(box64_ptr + s * 9 + 3 * k + i, row[i], mask=mask)
        tl.store(padded_ptr + s * 12 + 4 * k + i, row[i].to(kind), mask=mask)
    tl.store(padded_ptr + s * 12 + 4 * k + 3, (det * 0.0).to(kind), mask=mask)
    height = tl.abs(det) / tl.sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2])
    n_k = tl.load(nb_ptr + s * 3 + k, mask=mask, other=1.0)
    reach_k = tl.load(reach_ptr + s * 3 + k, mask=mask, other=1).to(tl.float64)
    return limit * n_k > reach_k * height


@triton.jit
def _cells_kernel(box_ptr, nb_ptr, reach_ptr, inv_ptr, box64_ptr, padded_ptr, stale_ptr, n_systems, limit,
                  SHARED: tl.constexpr, BLOCK: tl.constexpr):
    """Per system, from its cell (rows a, b, c; row 0 for all with SHARED): the float64 cell and
    inverse (columns b x c, c x a, a x b over det), the cell padded to 4 columns in the search
    dtype, and STALE where a height h_k = |det| / |cross_k| makes ``limit`` n_k > reach_k h_k."""
    s = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = s < n_systems
    src = s * 0 if SHARED else tl.where(mask, s, 0)  # lanes past the end compute system 0, stored nowhere
    every = src >= 0
    a, b, c = _row(box_ptr, src, 0, every), _row(box_ptr, src, 1, every), _row(box_ptr, src, 2, every)
    bc, ca, ab = _cross(b, c), _cross(c, a), _cross(a, b)
    det = a[0] * bc[0] + a[1] * bc[1] + a[2] * bc[2]
    stale = _cell_axis(inv_ptr, box64_ptr, padded_ptr, nb_ptr, reach_ptr, s, 0, a, bc, det, limit, mask)
    stale = stale | _cell_axis(inv_ptr, box64_ptr, padded_ptr, nb_ptr, reach_ptr, s, 1, b, ca, det, limit, mask)
    stale = stale | _cell_axis(inv_ptr, box64_ptr, padded_ptr, nb_ptr, reach_ptr, s, 2, c, ab, det, limit, mask)
    tl.store(stale_ptr + s, stale.to(tl.int8), mask=mask)


@triton.jit
def _bin(u, n):
    """floor(u) clamped to 0 .. n - 1 (NaN to 0), as int64."""
    b = tl.floor(tl.where(u != u, 0.0, u))
    return tl.minimum(tl.maximum(b, 0.0), n - 1.0).to(tl.int64)


@triton.jit
def _locate(pos_ptr, batch_ptr, inv_ptr, box_ptr, origin_ptr, width_ptr, nb_ptr, base_ptr, atoms, mask,
            PERIODIC: tl.constexpr):
    """(wrapped x, y, z; shift x, y, z (float64); bins x, y, z; key; outside) of ``atoms``."""
    px = tl.load(pos_ptr + atoms * 3, mask=mask, other=0.0).to(tl.float64)
    py = tl.load(pos_ptr + atoms * 3 + 1, mask=mask, other=0.0).to(tl.float64)
    pz = tl.load(pos_ptr + atoms * 3 + 2, mask=mask, other=0.0).to(tl.float64)
    s = tl.load(batch_ptr + atoms, mask=mask, other=0)
    nx = tl.load(nb_ptr + s * 3, mask=mask, other=1.0)
    ny = tl.load(nb_ptr + s * 3 + 1, mask=mask, other=1.0)
    nz = tl.load(nb_ptr + s * 3 + 2, mask=mask, other=1.0)
    if PERIODIC:
        i0, i1, i2 = _row(inv_ptr, s, 0, mask), _row(inv_ptr, s, 1, mask), _row(inv_ptr, s, 2, mask)
        fx = px * i0[0] + py * i1[0] + pz * i2[0]
        fy = px * i0[1] + py * i1[1] + pz * i2[1]
        fz = px * i0[2] + py * i1[2] + pz * i2[2]
        sx, sy, sz = tl.floor(fx), tl.floor(fy), tl.floor(fz)
        a, b, c = _row(box_ptr, s, 0, mask), _row(box_ptr, s, 1, mask), _row(box_ptr, s, 2, mask)
        wx = px - (sx * a[0] + sy * b[0] + sz * c[0])
        wy = py - (sx * a[1] + sy * b[1] + sz * c[1])
        wz = pz - (sx * a[2] + sy * b[2] + sz * c[2])
        ux, uy, uz = (fx - sx) * nx, (fy - sy) * ny, (fz - sz) * nz
        outside = atoms < 0
    else:
        ux = (px - tl.load(origin_ptr + s * 3, mask=mask, other=0.0)) / tl.load(width_ptr + s * 3, mask=mask, other=1.0)
        uy = (py - tl.load(origin_ptr + s * 3 + 1, mask=mask, other=0.0)) / tl.load(
            width_ptr + s * 3 + 1, mask=mask, other=1.0)
        uz = (pz - tl.load(origin_ptr + s * 3 + 2, mask=mask, other=0.0)) / tl.load(
            width_ptr + s * 3 + 2, mask=mask, other=1.0)
        wx, wy, wz = px, py, pz
        sx, sy, sz = px * 0.0, py * 0.0, pz * 0.0
        outside = (ux < 0) | (ux >= nx) | (uy < 0) | (uy >= ny) | (uz < 0) | (uz >= nz)
    bx, by, bz = _bin(ux, nx), _bin(uy, ny), _bin(uz, nz)
    key = tl.load(base_ptr + s, mask=mask, other=0) + (bx * ny.to(tl.int64) + by) * nz.to(tl.int64) + bz
    return wx, wy, wz, sx, sy, sz, bx, by, bz, key, outside & mask


@triton.jit
def _keys_kernel(pos_ptr, batch_ptr, inv_ptr, box_ptr, origin_ptr, width_ptr, nb_ptr, base_ptr, key_ptr, outside_ptr,
                 n_atoms, PERIODIC: tl.constexpr, BLOCK: tl.constexpr):
    atoms = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = atoms < n_atoms
    wx, wy, wz, sx, sy, sz, bx, by, bz, key, outside = _locate(
        pos_ptr, batch_ptr, inv_ptr, box_ptr, origin_ptr, width_ptr, nb_ptr, base_ptr, atoms, mask, PERIODIC)
    tl.store(key_ptr + atoms, key, mask=mask)
    tl.store(outside_ptr + atoms, outside.to(tl.int8), mask=mask)


@triton.jit
def _sorted_kernel(pos_ptr, batch_ptr, inv_ptr, box_ptr, origin_ptr, width_ptr, nb_ptr, base_ptr, order_ptr,
                   out_pos_ptr, out_atom_ptr, out_bin_ptr, out_shift_ptr, out_sys_ptr, n_atoms,
                   PERIODIC: tl.constexpr, BLOCK: tl.constexpr):
    slots = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = slots < n_atoms
    atoms = tl.load(order_ptr + slots, mask=mask, other=0)
    wx, wy, wz, sx, sy, sz, bx, by, bz, _, _ = _locate(
        pos_ptr, batch_ptr, inv_ptr, box_ptr, origin_ptr, width_ptr, nb_ptr, base_ptr, atoms, mask, PERIODIC)
    kind = out_pos_ptr.dtype.element_ty
    tl.store(out_pos_ptr + slots * 4, wx.to(kind), mask=mask)
    tl.store(out_pos_ptr + slots * 4 + 1, wy.to(kind), mask=mask)
    tl.store(out_pos_ptr + slots * 4 + 2, wz.to(kind), mask=mask)
    tl.store(out_pos_ptr + slots * 4 + 3, (wx * 0.0).to(kind), mask=mask)
    tl.store(out_atom_ptr + slots, atoms.to(tl.int32), mask=mask)
    tl.store(out_bin_ptr + slots * 3, bx, mask=mask)
    tl.store(out_bin_ptr + slots * 3 + 1, by, mask=mask)
    tl.store(out_bin_ptr + slots * 3 + 2, bz, mask=mask)
    tl.store(out_shift_ptr + slots * 4, sx.to(tl.int32), mask=mask)
    tl.store(out_shift_ptr + slots * 4 + 1, sy.to(tl.int32), mask=mask)
    tl.store(out_shift_ptr + slots * 4 + 2, sz.to(tl.int32), mask=mask)
    tl.store(out_shift_ptr + slots * 4 + 3, bx.to(tl.int32) * 0, mask=mask)
    tl.store(out_sys_ptr + slots, tl.load(batch_ptr + atoms, mask=mask, other=0).to(tl.int32), mask=mask)


def _block() -> int:
    return INTERPRETER_BLOCK if interpreting() else GPU_BLOCK


@torch.library.custom_op("fastnnp::bin_atoms", mutates_args=())
def _bin_atoms_op(
    pos: Tensor, batch: Tensor, cells: Tensor, origin: Tensor, width: Tensor, nbins: Tensor, reach: Tensor,
    base: Tensor, bin_ids: Tensor, limit: float, out_dtype: torch.dtype, periodic: bool, shared: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(pos [N, 4] out_dtype, atom [N] int32, bin [N, 3] int64, shift [N, 4] int32, sys [N]
    int32, box [S, 3, 4] out_dtype, bin_start [n_bins + 1] int64, stale and drift 0-d bool);
    ``cells`` [S or 1, 3, 3] (read when periodic), ``bin_ids`` = arange(n_bins + 1)."""
    n, n_systems, device = pos.shape[0], nbins.shape[0], pos.device
    padded = torch.zeros(n_systems, 3, 4, dtype=out_dtype, device=device)
    stale = torch.zeros(n_systems, dtype=torch.int8, device=device)
    inverse = boxes = nbins  # unread for open boundaries
    if periodic and n_systems:
        inverse, boxes = (torch.empty(n_systems, 3, 3, dtype=torch.float64, device=device) for _ in range(2))
        _cells_kernel[(triton.cdiv(n_systems, CELL_BLOCK),)](
            cells.contiguous(), nbins, reach, inverse, boxes, padded, stale, n_systems, limit,
            SHARED=shared, BLOCK=CELL_BLOCK,
        )
    frame = (pos.contiguous(), batch, inverse, boxes, origin, width, nbins, base)
    keys, outside = torch.empty(n, dtype=torch.int64, device=device), torch.empty(n, dtype=torch.int8, device=device)
    block = _block()
    grid = (triton.cdiv(n, block),)
    out = (pos.new_empty(n, 4, dtype=out_dtype), torch.empty(n, dtype=torch.int32, device=device),
           torch.empty(n, 3, dtype=torch.int64, device=device), torch.empty(n, 4, dtype=torch.int32, device=device),
           torch.empty(n, dtype=torch.int32, device=device))
    if n == 0:
        return *out, padded, torch.zeros_like(bin_ids), stale.any(), torch.zeros((), dtype=torch.bool, device=device)
    _keys_kernel[grid](*frame, keys, outside, n, PERIODIC=periodic, BLOCK=block)
    sorted_keys, order = torch.sort(keys, stable=True)
    _sorted_kernel[grid](*frame, order, *out, n, PERIODIC=periodic, BLOCK=block)
    return *out, padded, torch.searchsorted(sorted_keys, bin_ids), stale.any(), outside.any()


@_bin_atoms_op.register_fake
def _(pos, batch, cells, origin, width, nbins, reach, base, bin_ids, limit, out_dtype, periodic, shared):
    n, n_systems = pos.shape[0], nbins.shape[0]
    i32, i64 = torch.int32, torch.int64
    flag = pos.new_empty((), dtype=torch.bool)
    return (pos.new_empty(n, 4, dtype=out_dtype), pos.new_empty(n, dtype=i32), pos.new_empty(n, 3, dtype=i64),
            pos.new_empty(n, 4, dtype=i32), pos.new_empty(n, dtype=i32), pos.new_empty(n_systems, 3, 4, dtype=out_dtype),
            torch.empty_like(bin_ids), flag, flag.clone())


def _pad4(x: Tensor) -> Tensor:
    """[..., 3] -> [..., 4] with a zero 4th component (the search kernel's aligned vector loads)."""
    return torch.nn.functional.pad(x, (0, 1))


def _boxes(plan: "SearchPlan", box: Tensor) -> Tensor:
    """[S, 3, 3] float64 cells of the systems (a shared box repeated)."""
    b64 = box.to(torch.float64)
    return b64.reshape(1, 3, 3).expand(plan.n_systems, 3, 3) if plan.shared_box else b64[: plan.n_systems]


def _stale(plan: "SearchPlan", heights: Tensor) -> Tensor:
    """Whether a cell's bins became narrower than the cutoff for the planned reach (0-d bool)."""
    return (_stale_limit(plan) * plan.nbins > plan.reach * heights).any()


def _stale_limit(plan: "SearchPlan") -> float:
    return plan.cutoff_upper * (1 + 1e-6)


def bin_atoms(plan: "SearchPlan", pos: Tensor, box: Tensor | None) -> tuple[Bins, Tensor, Tensor]:
    """The search kernel's bin-sorted inputs for ``pos`` (and ``box``) on the plan's grid, and
    the STALE and DRIFT flags (0-d bool; :func:`~fastnnp.kernels.common.neighbor_search.planned_search`)."""
    cells = box.reshape(-1, 3, 3) if plan.periodic else plan.nbins  # unread for open boundaries
    *arrays, padded_box, bin_start, stale, drift = _bin_atoms_op(
        pos, plan.batch, cells, plan.origin, plan.width, plan.nbins, plan.reach, plan.base, plan.bin_ids,
        _stale_limit(plan), plan.open_box.dtype, plan.periodic, plan.shared_box,
    )
    return Bins(*arrays, box=padded_box, bin_start=bin_start), stale, drift


def reference_bins(plan: "SearchPlan", pos: Tensor, box: Tensor | None) -> tuple[Bins, Tensor, Tensor]:
    """:func:`bin_atoms` in torch (float64; :mod:`fastnnp.neighbors.cells`), for tests."""
    f64 = torch.float64
    batch = plan.batch
    p = pos.to(f64)
    nb_atom = plan.nbins.index_select(0, batch)
    if plan.periodic:
        cells = cell_frame(p, batch, _boxes(plan, box), plan.n_systems, batched=True)
        u = cells.frac * nb_atom
        shift, wrapped, boxes = cells.shift, cells.wrapped, cells.boxes
        stale = _stale(plan, cells.heights)
        drift = torch.zeros((), dtype=torch.bool, device=pos.device)
    else:
        u = (p - plan.origin.index_select(0, batch)) / plan.width.index_select(0, batch)
        shift, wrapped, boxes = torch.zeros_like(p, dtype=torch.long), p, None
        drift = ((u < 0) | (u >= nb_atom)).any()
        stale = torch.zeros((), dtype=torch.bool, device=pos.device)
    binc = bin_coords(u, plan.nbins, batch)
    binned = sort_into_bins(binc, plan.nbins_int, batch, plan.n_bins)
    order = binned.order
    kdt = plan.open_box.dtype
    bins = Bins(
        pos=_pad4(wrapped.index_select(0, order).to(kdt)),
        atom=order.to(torch.int32),
        bin=binc.index_select(0, order),
        shift=_pad4(shift.index_select(0, order).to(torch.int32)),
        sys=batch.index_select(0, order).to(torch.int32),
        box=plan.open_box if boxes is None else _pad4(boxes.to(kdt)),
        bin_start=bin_starts(binned.key, plan.n_bins),
    )
    return bins, stale, drift


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The atom kernels, periodic and open, and the cell kernel; float32 output (:mod:`fastnnp.kernels.compile_check`)."""
    frame = dict(pos_ptr="*fp32", batch_ptr="*i64", inv_ptr="*fp64", box_ptr="*fp64",
                 origin_ptr="*fp64", width_ptr="*fp64", nb_ptr="*fp64", base_ptr="*i64")
    keys = dict(frame, key_ptr="*i64", outside_ptr="*i8")
    ordered = dict(frame, order_ptr="*i64", out_pos_ptr="*fp32", out_atom_ptr="*i32", out_bin_ptr="*i64",
                   out_shift_ptr="*i32", out_sys_ptr="*i32")
    cells = dict(box_ptr="*fp32", nb_ptr="*fp64", reach_ptr="*i64", inv_ptr="*fp64", box64_ptr="*fp64",
                 padded_ptr="*fp32", stale_ptr="*i8")
    return [
        CompileCase(kernel, dict(PERIODIC=periodic, BLOCK=GPU_BLOCK), pointers)
        for kernel, pointers in ((_keys_kernel, keys), (_sorted_kernel, ordered)) for periodic in (True, False)
    ] + [CompileCase(_cells_kernel, dict(SHARED=False, BLOCK=CELL_BLOCK), cells, floats=("limit",))]
