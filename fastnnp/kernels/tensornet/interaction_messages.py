"""TensorNet interaction messages: distance, radial filter (radial MLP, or a radial table) and aggregation, fused.

For receiver i and its neighbours j in a :class:`~fastnnp.kernels.common.neighbor_search.NeighborTable`
(row i, slots k < counts[i]), with edge vector v_ik [3] and length d = |v_ik|:

    filter_ik = act(W3 act(W2 act(W1 rbf(d) + b1) + b2) + b3) * cutoff(d)      [3, F]
    messages[i, c, f] = sum_k filter_ik[group[c], f] * features[j_ik, c, f]      [N, 10, F]

where the ten components c are I, A as a vector (3) and S as six entries, with filter groups
0, 1 1 1, 2 2 2 2 2 2. Each program takes ``ROWS`` receivers and walks their slots ``SLOTS``
at a time (:func:`~fastnnp.kernels.common.edge_math.tile_shape`; hidden chunk, warps and stages
from :mod:`~fastnnp.kernels.tensornet.mlp_tiles`), so the MLP runs as ``tl.dot`` on
[ROWS * SLOTS, ...] tiles and every sum is a register reduction: no atomics, and nothing per
edge is written in the forward pass.

Backward (forces; parameters frozen) recomputes the MLP. Because the table lists both
directions of every pair with the same length, the gradient for the features is the same
neighbour sum applied to the incoming gradient; the gradient for each edge vector comes from
backpropagating sum_c grad[i, c] * features[j, c] through the MLP, the basis and the cutoff.

Table kernels (``_table_forward_kernel``, ``_table_backward_kernel``; taken when the filter is a
:class:`~fastnnp.kernels.common.radial_table.KernelTable`, i.e. the layer has a radial table):
filter_ik is read from the table, which already includes the cutoff, as a gather of the edge's
piece (its four coefficient rows, F floats per group) and a cubic in u, per directed edge: both
directions of a pair look it up. That reads 4 x 3F floats per edge where a filter stored per
pair would read 3F, but from a table that stays in L2 (e.g. 2048 pieces x 4 x 384 channels x
4 B = 12.6 MB at F=128, against about 50 MB of L2 on an H100/H200), while storing per pair would add
a [pairs, 3F] write, its DRAM read and a kernel; so the lookup is done per directed edge. Backward
uses the same polynomial's slope: d loss / d d_ik = sum_g sum_f slope_g(d) sum_{c in g}
grad[i, c] features[j, c], no MLP, no basis, no cutoff recomputed. The neighbour sums and the
per-group gradient products are the same ``@triton.jit`` helpers in both families.
"""

from typing import NamedTuple, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.edge_math import (
    FLOAT_SCALARS,
    activation,
    activation_grad,
    cosine_cutoff,
    edge_tile,
    program_rows,
    radial_basis,
    row_sum,
    store_vector_gradient,
    tile_shape,
    gpu_tile_constexprs,
)
from ..common.op_args import pack, register_filter, unpack
from ..common.radial_table import KernelTable, table_group, table_position
from .components import store_all_rows, zero_rows
from .mlp_tiles import interaction_launch, split_launch
from .table_tiles import table_compile_cases, table_launch


@register_filter
class RadialMLP(NamedTuple):
    """A TensorNet interaction's radial filter: basis, cutoffs and three linear layers
    (weights as ``nn.Linear`` stores them, [out, in]) with an activation after each."""

    rbf_code: int
    p0: Tensor  # [R] expnorm means / gauss offsets
    p1: Tensor  # [R] expnorm betas / gauss coefficient
    alpha: float
    cutoff_lower: float
    cutoff_upper: float
    activation_code: int
    w1: Tensor  # [F, R]
    b1: Tensor
    w2: Tensor  # [2F, F]
    b2: Tensor
    w3: Tensor  # [3F, 2F]
    b3: Tensor


# What the kernels take as a layer's radial filter: the MLP, or a table of it.
Radial = Union[RadialMLP, KernelTable]


@triton.jit
def _first_layer(d, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F, alpha, lower, upper,
                 RBF: tl.constexpr, ACT: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, PRECISION: tl.constexpr):
    """Radial basis (values, slopes) [M, BR] and the first layer's pre-activation and output [M, BF]."""
    r = tl.arange(0, BR)
    f = tl.arange(0, BF)
    p0 = tl.load(p0_ptr + r, mask=r < R, other=0.0)
    p1 = tl.load(p1_ptr + r, mask=r < R, other=0.0)
    rbf, rbf_slope = radial_basis(d, p0, p1, lower, upper, alpha, RBF)
    w1t = tl.load(w1_ptr + f[None, :] * R + r[:, None], mask=(r[:, None] < R) & (f[None, :] < F), other=0.0)
    z1 = tl.dot(rbf, w1t, input_precision=PRECISION) + tl.load(b1_ptr + f, mask=f < F, other=0.0)[None, :]
    return rbf, rbf_slope, z1, activation(z1, ACT)


@triton.jit
def _hidden_chunk(h1, w2_ptr, b2_ptr, k0, F, BF: tl.constexpr, KC: tl.constexpr, PRECISION: tl.constexpr):
    """Pre-activation [M, KC] of hidden units k0 .. k0 + KC of the second layer (2F units)."""
    f = tl.arange(0, BF)
    k = k0 + tl.arange(0, KC)
    w2t = tl.load(w2_ptr + k[None, :] * F + f[:, None], mask=(f[:, None] < F) & (k[None, :] < 2 * F), other=0.0)
    return tl.dot(h1, w2t, input_precision=PRECISION) + tl.load(b2_ptr + k, mask=k < 2 * F, other=0.0)[None, :]


@triton.jit
def _third_weights(w3_ptr, group: tl.constexpr, k0, F, BF: tl.constexpr, KC: tl.constexpr):
    """Columns k0 .. k0 + KC of W3's rows for filter group ``group``, as [BF, KC]."""
    f = tl.arange(0, BF)
    k = k0 + tl.arange(0, KC)
    return tl.load(w3_ptr + (group * F + f[:, None]) * (2 * F) + k[None, :],
                   mask=(f[:, None] < F) & (k[None, :] < 2 * F), other=0.0)


@triton.jit
def _last_layer(h1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, F, ACT: tl.constexpr, M: tl.constexpr, BF: tl.constexpr,
                KC: tl.constexpr, PRECISION: tl.constexpr):
    """Pre-activations [M, BF] of the last layer for the three filter groups. The 2F hidden
    units are streamed KC at a time, so no weight tile larger than [BF, KC] is staged."""
    f = tl.arange(0, BF)
    z3a = tl.zeros((M, BF), tl.float32) + tl.load(b3_ptr + f, mask=f < F, other=0.0)[None, :]
    z3b = tl.zeros((M, BF), tl.float32) + tl.load(b3_ptr + F + f, mask=f < F, other=0.0)[None, :]
    z3c = tl.zeros((M, BF), tl.float32) + tl.load(b3_ptr + 2 * F + f, mask=f < F, other=0.0)[None, :]
    for k0 in range(0, 2 * F, KC):
        h2 = activation(_hidden_chunk(h1, w2_ptr, b2_ptr, k0, F, BF, KC, PRECISION), ACT)
        z3a += tl.dot(h2, tl.trans(_third_weights(w3_ptr, 0, k0, F, BF, KC)), input_precision=PRECISION)
        z3b += tl.dot(h2, tl.trans(_third_weights(w3_ptr, 1, k0, F, BF, KC)), input_precision=PRECISION)
        z3c += tl.dot(h2, tl.trans(_third_weights(w3_ptr, 2, k0, F, BF, KC)), input_precision=PRECISION)
    return z3a, z3b, z3c


@triton.jit
def _gather(ptr, atom, c: tl.constexpr, F, valid, BF: tl.constexpr):
    """Component ``c`` [M, BF] of the per-atom [N, 10, F] array at ``ptr`` for atoms ``atom`` [M]."""
    f = tl.arange(0, BF)
    return tl.load(ptr + atom[:, None] * (10 * F) + c * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=0.0)


@triton.jit
def _vector_sums(a1, a2, a3, filt, ptr, sender, F, valid, ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """a1..a3 plus the neighbour sums of ``filt`` [M, BF] times components 1..3 (A) of ``ptr`` at the senders."""
    a1 += row_sum(filt * _gather(ptr, sender, 1, F, valid, BF), ROWS, SLOTS, BF)
    a2 += row_sum(filt * _gather(ptr, sender, 2, F, valid, BF), ROWS, SLOTS, BF)
    a3 += row_sum(filt * _gather(ptr, sender, 3, F, valid, BF), ROWS, SLOTS, BF)
    return a1, a2, a3


@triton.jit
def _tensor_sums(a4, a5, a6, a7, a8, a9, filt, ptr, sender, F, valid,
                 ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """a4..a9 plus the neighbour sums of ``filt`` [M, BF] times components 4..9 (S) of ``ptr`` at the senders."""
    a4 += row_sum(filt * _gather(ptr, sender, 4, F, valid, BF), ROWS, SLOTS, BF)
    a5 += row_sum(filt * _gather(ptr, sender, 5, F, valid, BF), ROWS, SLOTS, BF)
    a6 += row_sum(filt * _gather(ptr, sender, 6, F, valid, BF), ROWS, SLOTS, BF)
    a7 += row_sum(filt * _gather(ptr, sender, 7, F, valid, BF), ROWS, SLOTS, BF)
    a8 += row_sum(filt * _gather(ptr, sender, 8, F, valid, BF), ROWS, SLOTS, BF)
    a9 += row_sum(filt * _gather(ptr, sender, 9, F, valid, BF), ROWS, SLOTS, BF)
    return a4, a5, a6, a7, a8, a9


@triton.jit
def _forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, out_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, ACT: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        _, _, _, h1 = _first_layer(d, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F, alpha, lower, upper, RBF, ACT, BR, BF, PRECISION)
        z3a, z3b, z3c = _last_layer(h1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, F, ACT, ROWS * SLOTS, BF, KC, PRECISION)
        cut, _ = cosine_cutoff(d, lower, upper, HAS_LOWER)
        f0 = activation(z3a, ACT) * cut[:, None]
        a0 += row_sum(f0 * _gather(feat_ptr, sender, 0, F, valid, BF), ROWS, SLOTS, BF)
        f1 = activation(z3b, ACT) * cut[:, None]
        a1, a2, a3 = _vector_sums(a1, a2, a3, f1, feat_ptr, sender, F, valid, ROWS, SLOTS, BF)
        f2 = activation(z3c, ACT) * cut[:, None]
        a4, a5, a6, a7, a8, a9 = _tensor_sums(a4, a5, a6, a7, a8, a9, f2, feat_ptr, sender, F, valid, ROWS, SLOTS, BF)
    store_all_rows(out_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


@triton.jit
def _pair_product(grad_ptr, feat_ptr, row, sender, c: tl.constexpr, F, valid, BF: tl.constexpr):
    """grad[i, c] * features[j, c] [M, BF] for the tile's edges."""
    return _gather(grad_ptr, row, c, F, valid, BF) * _gather(feat_ptr, sender, c, F, valid, BF)


@triton.jit
def _group_product(grad_ptr, feat_ptr, row, sender, FIRST: tl.constexpr, LAST: tl.constexpr, F, valid,
                   BF: tl.constexpr):
    """d loss / d filter [M, BF] of one filter group: sum over its components c = FIRST .. LAST - 1
    of grad[i, c] * features[j, c]."""
    g = _pair_product(grad_ptr, feat_ptr, row, sender, FIRST, F, valid, BF)
    for c in tl.static_range(FIRST + 1, LAST):
        g += _pair_product(grad_ptr, feat_ptr, row, sender, c, F, valid, BF)
    return g


@triton.jit
def _backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, grad_ptr, grad_feat_ptr, grad_vec_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, ACT: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f = tl.arange(0, BF)
    r = tl.arange(0, BR)
    w1 = tl.load(w1_ptr + f[:, None] * R + r[None, :], mask=(f[:, None] < F) & (r[None, :] < R), other=0.0)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        _, rbf_slope, z1, h1 = _first_layer(
            d, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F, alpha, lower, upper, RBF, ACT, BR, BF, PRECISION
        )
        z3a, z3b, z3c = _last_layer(h1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, F, ACT, ROWS * SLOTS, BF, KC, PRECISION)
        cut, cut_slope = cosine_cutoff(d, lower, upper, HAS_LOWER)
        # Per group: the feature gradient's neighbour sum, and d loss / d last-layer pre-activation.
        out3 = activation(z3a, ACT)
        filt = out3 * cut[:, None]
        a0 += row_sum(filt * _gather(grad_ptr, sender, 0, F, valid, BF), ROWS, SLOTS, BF)
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 0, 1, F, valid, BF)
        g_cut = tl.sum(g_filter * out3, axis=1)
        g_z3a = g_filter * cut[:, None] * activation_grad(z3a, ACT)
        out3 = activation(z3b, ACT)
        filt = out3 * cut[:, None]
        a1, a2, a3 = _vector_sums(a1, a2, a3, filt, grad_ptr, sender, F, valid, ROWS, SLOTS, BF)
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 1, 4, F, valid, BF)
        g_cut += tl.sum(g_filter * out3, axis=1)
        g_z3b = g_filter * cut[:, None] * activation_grad(z3b, ACT)
        out3 = activation(z3c, ACT)
        filt = out3 * cut[:, None]
        a4, a5, a6, a7, a8, a9 = _tensor_sums(a4, a5, a6, a7, a8, a9, filt, grad_ptr, sender, F, valid, ROWS, SLOTS, BF)
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 4, 10, F, valid, BF)
        g_cut += tl.sum(g_filter * out3, axis=1)
        g_z3c = g_filter * cut[:, None] * activation_grad(z3c, ACT)
        # Back through the hidden layer, KC units at a time (recomputed), to the first layer.
        g_h1 = tl.zeros((ROWS * SLOTS, BF), tl.float32)
        for k0 in range(0, 2 * F, KC):
            z2 = _hidden_chunk(h1, w2_ptr, b2_ptr, k0, F, BF, KC, PRECISION)
            g_h2 = tl.dot(g_z3a, _third_weights(w3_ptr, 0, k0, F, BF, KC), input_precision=PRECISION)
            g_h2 += tl.dot(g_z3b, _third_weights(w3_ptr, 1, k0, F, BF, KC), input_precision=PRECISION)
            g_h2 += tl.dot(g_z3c, _third_weights(w3_ptr, 2, k0, F, BF, KC), input_precision=PRECISION)
            k = k0 + tl.arange(0, KC)
            w2 = tl.load(w2_ptr + k[:, None] * F + f[None, :], mask=(k[:, None] < 2 * F) & (f[None, :] < F), other=0.0)
            g_h1 += tl.dot(g_h2 * activation_grad(z2, ACT), w2, input_precision=PRECISION)
        g_rbf = tl.dot(g_h1 * activation_grad(z1, ACT), w1, input_precision=PRECISION)
        g_d = tl.sum(g_rbf * rbf_slope, axis=1) + g_cut * cut_slope
        store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d)
    store_all_rows(grad_feat_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


@triton.jit
def _table_forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, out_ptr, coef_ptr,
    n_rows, K, F, pieces, lower, upper, rate, scale, slope_scale,
    RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        piece, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale, RATE, ZERO_OUTSIDE, HAS_LOWER)
        f0, _ = table_group(coef_ptr, piece, u, dt, use, 0, F, BF, False)
        a0 += row_sum(f0 * _gather(feat_ptr, sender, 0, F, valid, BF), ROWS, SLOTS, BF)
        f1, _ = table_group(coef_ptr, piece, u, dt, use, 1, F, BF, False)
        a1, a2, a3 = _vector_sums(a1, a2, a3, f1, feat_ptr, sender, F, valid, ROWS, SLOTS, BF)
        f2, _ = table_group(coef_ptr, piece, u, dt, use, 2, F, BF, False)
        a4, a5, a6, a7, a8, a9 = _tensor_sums(a4, a5, a6, a7, a8, a9, f2, feat_ptr, sender, F, valid, ROWS, SLOTS, BF)
    store_all_rows(out_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


@triton.jit
def _table_backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, grad_ptr, grad_feat_ptr, grad_vec_ptr, coef_ptr,
    n_rows, K, F, pieces, lower, upper, rate, scale, slope_scale,
    RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        piece, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale, RATE, ZERO_OUTSIDE, HAS_LOWER)
        # Per group: the feature gradient's neighbour sum, and d loss / d d through the table's slope.
        filt, slope = table_group(coef_ptr, piece, u, dt, use, 0, F, BF, True)
        a0 += row_sum(filt * _gather(grad_ptr, sender, 0, F, valid, BF), ROWS, SLOTS, BF)
        g_d = tl.sum(_group_product(grad_ptr, feat_ptr, row, sender, 0, 1, F, valid, BF) * slope, axis=1)
        filt, slope = table_group(coef_ptr, piece, u, dt, use, 1, F, BF, True)
        a1, a2, a3 = _vector_sums(a1, a2, a3, filt, grad_ptr, sender, F, valid, ROWS, SLOTS, BF)
        g_d += tl.sum(_group_product(grad_ptr, feat_ptr, row, sender, 1, 4, F, valid, BF) * slope, axis=1)
        filt, slope = table_group(coef_ptr, piece, u, dt, use, 2, F, BF, True)
        a4, a5, a6, a7, a8, a9 = _tensor_sums(a4, a5, a6, a7, a8, a9, filt, grad_ptr, sender, F, valid, ROWS, SLOTS, BF)
        g_d += tl.sum(_group_product(grad_ptr, feat_ptr, row, sender, 4, 10, F, valid, BF) * slope, axis=1)
        store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d)
    store_all_rows(grad_feat_ptr, row0, n_rows, F, ROWS, BF, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)


def _launch(radial: Radial, neighbors: Tensor, precision: str, backward: bool):
    """(kernel, grid, parameter arguments, scalar arguments, meta) of the MLP or the table kernel."""
    n_rows, K = neighbors.shape
    if isinstance(radial, KernelTable):
        return (_table_backward_kernel if backward else _table_forward_kernel, *table_launch(radial, n_rows, K))
    F, R = radial.w1.shape
    rows, slots = tile_shape()
    weights = (radial.p0, radial.p1, radial.w1, radial.b1, radial.w2, radial.b2, radial.w3, radial.b3)
    scalars = (n_rows, K, R, F, radial.alpha, radial.cutoff_lower, radial.cutoff_upper)
    BF = max(16, triton.next_power_of_2(F))
    meta = dict(
        RBF=radial.rbf_code, ACT=radial.activation_code, HAS_LOWER=radial.cutoff_lower > 0, PRECISION=precision,
        ROWS=rows, SLOTS=slots, BR=max(16, triton.next_power_of_2(R)), BF=BF, **interaction_launch(backward, BF),
    )
    kernel = _backward_kernel if backward else _forward_kernel
    return kernel, (triton.cdiv(n_rows, rows),), weights, scalars, meta


@torch.library.custom_op("fastnnp::interaction_messages", mutates_args=())
def _messages_op(
    vec: Tensor, features: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> Tensor:
    """Forward kernel; the filter packed by :func:`~fastnnp.kernels.common.op_args.pack`."""
    out = torch.empty_like(features)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, False)
    kernel[grid](vec, neighbors, counts, features, out, *weights, *scalars, **meta)
    return out


@_messages_op.register_fake
def _(vec, features, neighbors, counts, kind, tensors, floats, ints, precision):
    return torch.empty_like(features)


@torch.library.custom_op("fastnnp::interaction_messages_backward", mutates_args=())
def _messages_backward_op(
    grad: Tensor, vec: Tensor, features: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> tuple[Tensor, Tensor]:
    """Backward kernel: (gradient of the edge vectors, of the features)."""
    grad_features = torch.empty_like(features)
    grad_vec = torch.zeros_like(vec)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, True)
    kernel[grid](vec, neighbors, counts, features, grad.contiguous(), grad_features, grad_vec, *weights, *scalars, **meta)
    return grad_vec, grad_features


@_messages_backward_op.register_fake
def _(grad, vec, features, neighbors, counts, kind, tensors, floats, ints, precision):
    return torch.empty_like(vec), torch.empty_like(features)


def _setup_context(ctx, inputs, output):
    vec, features, neighbors, counts, kind, tensors, floats, ints, precision = inputs
    ctx.save_for_backward(vec, features, neighbors, counts, *tensors)
    ctx.filter_args = (kind, floats, ints, precision)


def _backward(ctx, grad):
    vec, features, neighbors, counts, *tensors = ctx.saved_tensors
    kind, floats, ints, precision = ctx.filter_args
    grad_vec, grad_features = _messages_backward_op(
        grad, vec, features, neighbors, counts, kind, tensors, floats, ints, precision
    )
    return grad_vec, grad_features, None, None, None, [None] * len(tensors), None, None, None


_messages_op.register_autograd(_backward, setup_context=_setup_context)


def interaction_messages(
    vec: Tensor, features: Tensor, neighbors: Tensor, counts: Tensor, radial: Radial, precision: str = "ieee"
) -> Tensor:
    """Filtered neighbour sums [N, 10, F] of ``features`` [N, 10, F] (I, A vector, S six).

    ``vec`` [N, K, 3] edge vectors of the table rows ``neighbors`` [N, K] (int32) with
    ``counts`` [N] valid slots; float32, contiguous, on one device. ``radial`` is the layer's
    filter: a :class:`RadialMLP` (the MLP kernels) or a
    :class:`~fastnnp.kernels.common.radial_table.KernelTable` of it (the table kernels).
    ``precision`` is the MLP's ``tl.dot`` input precision: "ieee" (exact fp32) or "tf32"
    (opt-in, faster on GPUs); the table kernels have no matmul and ignore it. Differentiable in
    ``vec`` and ``features`` (the filter's parameters are constants); the registered op
    ``torch.ops.fastnnp.interaction_messages``.
    """
    return _messages_op(
        vec.contiguous(), features.contiguous(), neighbors.contiguous(), counts.contiguous(), *pack(radial), precision
    )


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """Forward and backward of the MLP and the table kernels at production shape
    (:mod:`fastnnp.kernels.compile_check`), each with its launch's KC, warps and stages
    (:mod:`~fastnnp.kernels.tensornet.mlp_tiles`); the table ones with rate > 0, no lower cutoff."""
    base = dict(RBF=0, ACT=0, HAS_LOWER=False, PRECISION="ieee", **gpu_tile_constexprs(channels, num_rbf))
    table = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    cases = []
    for fn, backward in ((_forward_kernel, False), (_backward_kernel, True)):
        chunk, warps, stages = split_launch(interaction_launch(backward, base["BF"]))
        cases.append(CompileCase(fn, {**base, **chunk}, table, FLOAT_SCALARS, warps, stages))
    return cases + table_compile_cases(_table_forward_kernel, _table_backward_kernel, channels)
