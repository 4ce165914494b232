"""TensorNet embedding messages: distance, direction, radial filter (basis and projection, or a radial table) and aggregation, fused.

For receiver i, its neighbours j in a :class:`~fastnnp.kernels.common.neighbor_search.NeighborTable`,
edge vector v_ik, length d and direction u = v / d:

    P_ik = (W rbf(d) + b) * cutoff(d)                       [3, F]  (W = the three distance_proj)
    a_ik = P_ik * (z_recv[i] + z_send[j])                   [3, F]
    out[i] = sum_k (a_ik[0], a_ik[1] u, a_ik[2] (u u^T as xx yy zz xy xz yz))   [N, 10, F]

The layout (I, A as a vector, S as six entries) matches
:mod:`~fastnnp.kernels.tensornet.interaction_messages`. Programs take ``ROWS`` receivers, ``SLOTS`` slots
at a time (warps from :mod:`~fastnnp.kernels.tensornet.mlp_tiles`), and sum in registers (no
atomics). Backward gives the gradient for the edge vectors only: the atom-type terms do not
depend on positions, and parameters are constants.

Table kernels (``_table_forward_kernel``, ``_table_backward_kernel``; taken when the filter is a
:class:`~fastnnp.kernels.common.radial_table.KernelTable`, i.e. the embedding has a radial
table): P_ik = table(d) (projections times cutoff, tabulated), looked up per directed edge as a
gather of the piece's four coefficient rows per group (from L2, cheaper than writing and
reading P per pair: :mod:`~fastnnp.kernels.tensornet.interaction_messages`); backward takes d P / d d from the same cubic's slope instead of recomputing basis,
projection and cutoff. The direction sums and the A, S parts of backward are helpers shared
with the projection kernels.
"""

from typing import NamedTuple, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.edge_math import (
    FLOAT_SCALARS,
    cosine_cutoff,
    edge_tile,
    program_rows,
    radial_basis,
    row_sum,
    tile_shape,
    gpu_tile_constexprs,
)
from ..common.op_args import constant, pack, register_filter, unpack
from ..common.radial_table import KernelTable, table_group, table_position
from .components import store_all_rows, zero_rows
from .mlp_tiles import embedding_launch, split_launch
from .table_tiles import table_compile_cases, table_launch


@register_filter
class DistanceProjection(NamedTuple):
    """The embedding's radial filter: basis, cutoffs and the stacked projections [3F, R], [3F]."""

    rbf_code: int
    p0: Tensor
    p1: Tensor
    alpha: float
    cutoff_lower: float
    cutoff_upper: float
    weight: Tensor
    bias: Tensor


# What the kernels take as the embedding's radial filter: the projections, or a table of them.
Radial = Union[DistanceProjection, KernelTable]


@triton.jit
def _projection(rbf, w_ptr, b_ptr, group: tl.constexpr, R, F, BR: tl.constexpr, BF: tl.constexpr,
                PRECISION: tl.constexpr):
    """W_g rbf + b_g [M, BF] for projection ``group``."""
    r = tl.arange(0, BR)
    f = tl.arange(0, BF)
    wt = tl.load(w_ptr + (group * F + f[None, :]) * R + r[:, None], mask=(r[:, None] < R) & (f[None, :] < F), other=0.0)
    return tl.dot(rbf, wt, input_precision=PRECISION) + tl.load(b_ptr + group * F + f, mask=f < F, other=0.0)[None, :]


@triton.jit
def _atom_rows(ptr, atom, F, valid, BF: tl.constexpr):
    """Rows [M, BF] of a per-atom [N, F] array."""
    f = tl.arange(0, BF)
    return tl.load(ptr + atom[:, None] * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=0.0)


@triton.jit
def _direction(vx, vy, vz, d):
    inv = 1.0 / tl.maximum(d, 1.1754943508222875e-38)
    return vx * inv, vy * inv, vz * inv


@triton.jit
def _vector_messages(a1, a2, a3, m1, ux, uy, uz, ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """a1..a3 plus the receivers' sums of the A messages ``m1`` [M, BF] times the direction."""
    a1 += row_sum(m1 * ux[:, None], ROWS, SLOTS, BF)
    a2 += row_sum(m1 * uy[:, None], ROWS, SLOTS, BF)
    a3 += row_sum(m1 * uz[:, None], ROWS, SLOTS, BF)
    return a1, a2, a3


@triton.jit
def _tensor_messages(a4, a5, a6, a7, a8, a9, m2, ux, uy, uz, ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """a4..a9 plus the receivers' sums of the S messages ``m2`` [M, BF] times u u^T (xx yy zz xy xz yz)."""
    a4 += row_sum(m2 * (ux * ux)[:, None], ROWS, SLOTS, BF)
    a5 += row_sum(m2 * (uy * uy)[:, None], ROWS, SLOTS, BF)
    a6 += row_sum(m2 * (uz * uz)[:, None], ROWS, SLOTS, BF)
    a7 += row_sum(m2 * (ux * uy)[:, None], ROWS, SLOTS, BF)
    a8 += row_sum(m2 * (ux * uz)[:, None], ROWS, SLOTS, BF)
    a9 += row_sum(m2 * (uy * uz)[:, None], ROWS, SLOTS, BF)
    return a4, a5, a6, a7, a8, a9


@triton.jit
def _forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, zr_ptr, zs_ptr, out_ptr, p0_ptr, p1_ptr, w_ptr, b_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    r = tl.arange(0, BR)
    p0 = tl.load(p0_ptr + r, mask=r < R, other=0.0)
    p1 = tl.load(p1_ptr + r, mask=r < R, other=0.0)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        ux, uy, uz = _direction(vx, vy, vz, d)
        rbf, rbf_slope = radial_basis(d, p0, p1, lower, upper, alpha, RBF)
        cut, cut_slope = cosine_cutoff(d, lower, upper, HAS_LOWER)
        types = (_atom_rows(zr_ptr, row, F, valid, BF) + _atom_rows(zs_ptr, sender, F, valid, BF)) * cut[:, None]
        a0 += row_sum(_projection(rbf, w_ptr, b_ptr, 0, R, F, BR, BF, PRECISION) * types, ROWS, SLOTS, BF)
        m1 = _projection(rbf, w_ptr, b_ptr, 1, R, F, BR, BF, PRECISION) * types
        a1, a2, a3 = _vector_messages(a1, a2, a3, m1, ux, uy, uz, ROWS, SLOTS, BF)
        m2 = _projection(rbf, w_ptr, b_ptr, 2, R, F, BR, BF, PRECISION) * types
        a4, a5, a6, a7, a8, a9 = _tensor_messages(a4, a5, a6, a7, a8, a9, m2, ux, uy, uz, ROWS, SLOTS, BF)
    store_all_rows(out_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


@triton.jit
def _grad_rows(grad_ptr, row, c: tl.constexpr, F, valid, BF: tl.constexpr):
    """Component ``c`` [M, BF] of the incoming gradient [N, 10, F] at the receivers."""
    f = tl.arange(0, BF)
    return tl.load(grad_ptr + row[:, None] * (10 * F) + c * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=0.0)


@triton.jit
def _vector_backward(message, types, grad_ptr, row, F, valid, ux, uy, uz, BF: tl.constexpr):
    """A part of the backward pass, from its messages (filter x types) [M, BF]: d loss / d direction
    (g_ux, g_uy, g_uz [M]) and d loss / d filter [M, BF]."""
    gx = _grad_rows(grad_ptr, row, 1, F, valid, BF)
    gy = _grad_rows(grad_ptr, row, 2, F, valid, BF)
    gz = _grad_rows(grad_ptr, row, 3, F, valid, BF)
    g_ux = tl.sum(message * gx, axis=1)
    g_uy = tl.sum(message * gy, axis=1)
    g_uz = tl.sum(message * gz, axis=1)
    return g_ux, g_uy, g_uz, (gx * ux[:, None] + gy * uy[:, None] + gz * uz[:, None]) * types


@triton.jit
def _tensor_backward(message, types, grad_ptr, row, F, valid, ux, uy, uz, BF: tl.constexpr):
    """S part of the backward pass (six outer-product entries xx yy zz xy xz yz), as
    :func:`_vector_backward`."""
    gxx = _grad_rows(grad_ptr, row, 4, F, valid, BF)
    gyy = _grad_rows(grad_ptr, row, 5, F, valid, BF)
    gzz = _grad_rows(grad_ptr, row, 6, F, valid, BF)
    gxy = _grad_rows(grad_ptr, row, 7, F, valid, BF)
    gxz = _grad_rows(grad_ptr, row, 8, F, valid, BF)
    gyz = _grad_rows(grad_ptr, row, 9, F, valid, BF)
    txx = tl.sum(message * gxx, axis=1)
    tyy = tl.sum(message * gyy, axis=1)
    tzz = tl.sum(message * gzz, axis=1)
    txy = tl.sum(message * gxy, axis=1)
    txz = tl.sum(message * gxz, axis=1)
    tyz = tl.sum(message * gyz, axis=1)
    g_lin = (
        gxx * (ux * ux)[:, None] + gyy * (uy * uy)[:, None] + gzz * (uz * uz)[:, None]
        + gxy * (ux * uy)[:, None] + gxz * (ux * uz)[:, None] + gyz * (uy * uz)[:, None]
    ) * types
    return (2.0 * txx * ux + txy * uy + txz * uz, 2.0 * tyy * uy + txy * ux + tyz * uz,
            2.0 * tzz * uz + txz * ux + tyz * uy, g_lin)


@triton.jit
def _store_vector_gradient(grad_vec_ptr, edge, valid, d, ux, uy, uz, g_d, g_ux, g_uy, g_uz):
    """Length and direction -> vector: dv = g_d u + (g_u - (g_u . u) u) / d."""
    radial = g_ux * ux + g_uy * uy + g_uz * uz
    inv = tl.where(d > 0, 1.0 / tl.where(d > 0, d, 1.0), 0.0)
    gvx = tl.where(valid, g_d * ux + (g_ux - radial * ux) * inv, 0.0)
    gvy = tl.where(valid, g_d * uy + (g_uy - radial * uy) * inv, 0.0)
    gvz = tl.where(valid, g_d * uz + (g_uz - radial * uz) * inv, 0.0)
    tl.store(grad_vec_ptr + 3 * edge, gvx, mask=valid)
    tl.store(grad_vec_ptr + 3 * edge + 1, gvy, mask=valid)
    tl.store(grad_vec_ptr + 3 * edge + 2, gvz, mask=valid)


@triton.jit
def _backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, zr_ptr, zs_ptr, grad_ptr, grad_vec_ptr, p0_ptr, p1_ptr, w_ptr, b_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    r = tl.arange(0, BR)
    f = tl.arange(0, BF)
    p0 = tl.load(p0_ptr + r, mask=r < R, other=0.0)
    p1 = tl.load(p1_ptr + r, mask=r < R, other=0.0)
    w_mask = (f[:, None] < F) & (r[None, :] < R)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        ux, uy, uz = _direction(vx, vy, vz, d)
        rbf, rbf_slope = radial_basis(d, p0, p1, lower, upper, alpha, RBF)
        cut, cut_slope = cosine_cutoff(d, lower, upper, HAS_LOWER)
        types = _atom_rows(zr_ptr, row, F, valid, BF) + _atom_rows(zs_ptr, sender, F, valid, BF)
        # I: d loss / d projection, through the cutoff and the basis.
        lin = _projection(rbf, w_ptr, b_ptr, 0, R, F, BR, BF, PRECISION)
        g_lin = _grad_rows(grad_ptr, row, 0, F, valid, BF) * types
        g_cut = tl.sum(g_lin * lin, axis=1)
        g_rbf = tl.dot(g_lin * cut[:, None], tl.load(w_ptr + f[:, None] * R + r[None, :], mask=w_mask, other=0.0),
                       input_precision=PRECISION)
        # A: also d loss / d direction.
        lin = _projection(rbf, w_ptr, b_ptr, 1, R, F, BR, BF, PRECISION)
        g_ux, g_uy, g_uz, g_lin = _vector_backward(lin * types * cut[:, None], types, grad_ptr, row, F, valid, ux, uy, uz, BF)
        g_cut += tl.sum(g_lin * lin, axis=1)
        g_rbf += tl.dot(g_lin * cut[:, None], tl.load(w_ptr + (F + f[:, None]) * R + r[None, :], mask=w_mask, other=0.0),
                        input_precision=PRECISION)
        # S: six outer-product entries xx yy zz xy xz yz.
        lin = _projection(rbf, w_ptr, b_ptr, 2, R, F, BR, BF, PRECISION)
        dux, duy, duz, g_lin = _tensor_backward(lin * types * cut[:, None], types, grad_ptr, row, F, valid, ux, uy, uz, BF)
        g_ux += dux
        g_uy += duy
        g_uz += duz
        g_cut += tl.sum(g_lin * lin, axis=1)
        g_rbf += tl.dot(g_lin * cut[:, None], tl.load(w_ptr + (2 * F + f[:, None]) * R + r[None, :], mask=w_mask, other=0.0),
                        input_precision=PRECISION)
        # Length and direction -> vector: dv = g_d u + (g_u - (g_u . u) u) / d.
        g_d = tl.sum(g_rbf * rbf_slope, axis=1) + g_cut * cut_slope
        _store_vector_gradient(grad_vec_ptr, edge, valid, d, ux, uy, uz, g_d, g_ux, g_uy, g_uz)


@triton.jit
def _table_forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, zr_ptr, zs_ptr, out_ptr, coef_ptr,
    n_rows, K, F, pieces, lower, upper, rate, scale, slope_scale,
    RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        ux, uy, uz = _direction(vx, vy, vz, d)
        piece, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale, RATE, ZERO_OUTSIDE, HAS_LOWER)
        types = _atom_rows(zr_ptr, row, F, valid, BF) + _atom_rows(zs_ptr, sender, F, valid, BF)
        p0, _ = table_group(coef_ptr, piece, u, dt, use, 0, F, BF, False)
        a0 += row_sum(p0 * types, ROWS, SLOTS, BF)
        p1, _ = table_group(coef_ptr, piece, u, dt, use, 1, F, BF, False)
        a1, a2, a3 = _vector_messages(a1, a2, a3, p1 * types, ux, uy, uz, ROWS, SLOTS, BF)
        p2, _ = table_group(coef_ptr, piece, u, dt, use, 2, F, BF, False)
        a4, a5, a6, a7, a8, a9 = _tensor_messages(a4, a5, a6, a7, a8, a9, p2 * types, ux, uy, uz, ROWS, SLOTS, BF)
    store_all_rows(out_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


@triton.jit
def _table_backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, zr_ptr, zs_ptr, grad_ptr, grad_vec_ptr, coef_ptr,
    n_rows, K, F, pieces, lower, upper, rate, scale, slope_scale,
    RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        ux, uy, uz = _direction(vx, vy, vz, d)
        piece, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale, RATE, ZERO_OUTSIDE, HAS_LOWER)
        types = _atom_rows(zr_ptr, row, F, valid, BF) + _atom_rows(zs_ptr, sender, F, valid, BF)
        # I: d loss / d filter, through the table's slope to the length.
        value, slope = table_group(coef_ptr, piece, u, dt, use, 0, F, BF, True)
        g_d = tl.sum(_grad_rows(grad_ptr, row, 0, F, valid, BF) * types * slope, axis=1)
        # A: also d loss / d direction.
        value, slope = table_group(coef_ptr, piece, u, dt, use, 1, F, BF, True)
        g_ux, g_uy, g_uz, g_filter = _vector_backward(value * types, types, grad_ptr, row, F, valid, ux, uy, uz, BF)
        g_d += tl.sum(g_filter * slope, axis=1)
        # S: six outer-product entries xx yy zz xy xz yz.
        value, slope = table_group(coef_ptr, piece, u, dt, use, 2, F, BF, True)
        dux, duy, duz, g_filter = _tensor_backward(value * types, types, grad_ptr, row, F, valid, ux, uy, uz, BF)
        g_ux += dux
        g_uy += duy
        g_uz += duz
        g_d += tl.sum(g_filter * slope, axis=1)
        _store_vector_gradient(grad_vec_ptr, edge, valid, d, ux, uy, uz, g_d, g_ux, g_uy, g_uz)


def _launch(radial: Radial, neighbors: Tensor, precision: str, backward: bool):
    """(kernel, grid, parameter arguments, scalar arguments, meta) of the projection or the table kernel."""
    n_rows, K = neighbors.shape
    if isinstance(radial, KernelTable):
        return (_table_backward_kernel if backward else _table_forward_kernel, *table_launch(radial, n_rows, K))
    F3, R = radial.weight.shape
    F = F3 // 3
    weights = (radial.p0, radial.p1, radial.weight, radial.bias)
    scalars = (n_rows, K, R, F, radial.alpha, radial.cutoff_lower, radial.cutoff_upper)
    rows, slots = tile_shape()
    BF = max(16, triton.next_power_of_2(F))
    meta = dict(
        RBF=radial.rbf_code, HAS_LOWER=radial.cutoff_lower > 0, PRECISION=precision, ROWS=rows, SLOTS=slots,
        BR=max(16, triton.next_power_of_2(R)), BF=BF, **embedding_launch(backward),
    )
    kernel = _backward_kernel if backward else _forward_kernel
    return kernel, (triton.cdiv(n_rows, rows),), weights, scalars, meta


@torch.library.custom_op("fastnnp::embedding_messages", mutates_args=())
def _messages_op(
    vec: Tensor, z_recv: Tensor, z_send: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> Tensor:
    """Forward kernel; the filter packed by :func:`~fastnnp.kernels.common.op_args.pack`."""
    n_rows, F = z_recv.shape
    out = z_recv.new_empty(n_rows, 10, F)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, False)
    kernel[grid](vec, neighbors, counts, z_recv, z_send, out, *weights, *scalars, **meta)
    return out


@_messages_op.register_fake
def _(vec, z_recv, z_send, neighbors, counts, kind, tensors, floats, ints, precision):
    return z_recv.new_empty(z_recv.shape[0], 10, z_recv.shape[1])


@torch.library.custom_op("fastnnp::embedding_messages_backward", mutates_args=())
def _messages_backward_op(
    grad: Tensor, vec: Tensor, z_recv: Tensor, z_send: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> Tensor:
    """Backward kernel: the gradient of the edge vectors."""
    grad_vec = torch.zeros_like(vec)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, True)
    kernel[grid](vec, neighbors, counts, z_recv, z_send, grad.contiguous(), grad_vec, *weights, *scalars, **meta)
    return grad_vec


@_messages_backward_op.register_fake
def _(grad, vec, z_recv, z_send, neighbors, counts, kind, tensors, floats, ints, precision):
    return torch.empty_like(vec)


def _setup_context(ctx, inputs, output):
    vec, z_recv, z_send, neighbors, counts, kind, tensors, floats, ints, precision = inputs
    ctx.save_for_backward(vec, z_recv, z_send, neighbors, counts, *tensors)
    ctx.filter_args = (kind, floats, ints, precision)


def _backward(ctx, grad):
    vec, z_recv, z_send, neighbors, counts, *tensors = ctx.saved_tensors
    kind, floats, ints, precision = ctx.filter_args
    grad_vec = _messages_backward_op(grad, vec, z_recv, z_send, neighbors, counts, kind, tensors, floats, ints, precision)
    return grad_vec, None, None, None, None, None, [None] * len(tensors), None, None, None


_messages_op.register_autograd(_backward, setup_context=_setup_context)


def embedding_messages(
    vec: Tensor, z_recv: Tensor, z_send: Tensor, neighbors: Tensor, counts: Tensor,
    radial: Radial, precision: str = "ieee",
) -> Tensor:
    """Summed embedding messages [N, 10, F] (I, A vector, S six) of the table rows.

    ``vec`` [N, K, 3] edge vectors, ``z_recv``/``z_send`` [N, F] the atom-type terms of
    receiver and sender, ``neighbors`` [N, K] int32, ``counts`` [N]; float32, contiguous.
    ``radial`` the embedding's filter: a :class:`DistanceProjection` (the projection kernels) or
    a :class:`~fastnnp.kernels.common.radial_table.KernelTable` of it (the table kernels).
    Differentiable in ``vec`` (atom-type terms and parameters are constants); the registered
    op ``torch.ops.fastnnp.embedding_messages``.
    """
    return _messages_op(
        vec.contiguous(), constant(z_recv), constant(z_send),
        neighbors.contiguous(), counts.contiguous(), *pack(radial), precision,
    )


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """Forward and backward of the projection and the table kernels at production shape
    (:mod:`fastnnp.kernels.compile_check`), the projection ones with their launch's warps
    (:mod:`~fastnnp.kernels.tensornet.mlp_tiles`); the table ones with rate > 0, no lower cutoff."""
    base = dict(RBF=0, HAS_LOWER=False, PRECISION="ieee", **gpu_tile_constexprs(channels, num_rbf))
    table = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    cases = []
    for fn, backward in ((_forward_kernel, False), (_backward_kernel, True)):
        extra, warps, stages = split_launch(embedding_launch(backward))
        cases.append(CompileCase(fn, {**base, **extra}, table, FLOAT_SCALARS, warps, stages))
    return cases + table_compile_cases(_table_forward_kernel, _table_backward_kernel, channels)
