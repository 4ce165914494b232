"""ET attention messages: distance filter (exact, or a radial table), attention and aggregation, fused.

For receiver i, its neighbours j in a :class:`~fastnnp.kernels.common.neighbor_search.NeighborTable`
(row i, slots k < counts[i]; edge vector e = r_i - r_j, length d, direction from receiver to
sender dir = -e / d) and one self loop per atom (j = i, d = 0, dir = 0), with H heads of D
channels (F = H D; per-head views of q, k [N, F], v [N, 3F] as the layer's reshapes)::

    dk, dv = act(W_k rbf(d) + b_k), act(W_v rbf(d) + b_v)     (or a table of [dk | dv]; 1 when absent)
    a_ij   = attn_act(sum_D q_i k_j dk) * cutoff(d)           [H]  (vector_cutoff: v_j * cutoff(d) instead)
    s, u1, u2 = split(v_j * dv, D) per head
    m_i    = sum_j s a_ij                                     [N, F]
    mvec_i = sum_j vec_j u1 + u2 dir_ij                       [N, 3, F]

Channels are held in a padded head layout: position p = h BD + c of a [M, BH BD] tile is channel
h D + c (BH, BD the powers of two at or above H, D), so a head's sum is a reduction over the
last axis of the tile reshaped to [M, BH, BD]. Each program takes ``ROWS`` receivers and walks
their slots ``SLOTS`` at a time (:func:`~fastnnp.kernels.common.edge_math.tile_shape`); the sums
over slots are register reductions, the self loop is added per receiver from the layer's filter
at d = 0 (``loop_filter`` [C]) and cutoff(0). Nothing per edge is written in forward.

Backward (forces and stress: parameters are constants) recomputes the filter and the attention.
Two kernels, no atomics, using that the table lists both directions of every pair with the same
length (the reversed slot holds -e):

* the receiver kernel: d loss / d q_i (a register sum over the row) and d loss / d e per slot,
  through the direction, the cutoff and the filter (exact: the activation's derivative times
  the projections of the basis' slopes, accumulated with the values; table: the cubic's slope);
* the sender kernel: for atom r, the edges (n <- r) it sends on are the reversals of its own
  row's slots (n, -e): d loss / d k_r, v_r, vec_r are register sums over r's row, from the
  receivers' q_n and incoming gradients gathered there.

The per-edge forward terms and their gradients are the same ``@triton.jit`` helpers in all three
kernels and in the self loops. The exact filter's projections are R rank-one updates of [M, BF]
accumulators (no ``tl.dot``, so the small (1, 4) tile fits every kernel without spills; the
table's layout, [dk (F) | dv (3F)], is the layer's ``distance_filter``'s).

Work per directed edge, distance_influence "both" (F channels, H heads, R basis functions;
fp32, 2 FLOPs per FMA; rows of the receiver itself stay in registers or L1 and are not counted;
the edge's own loads are 16 bytes: sender index and vector):

* forward: attention and messages ~21F FLOPs (q k dk and the head sums 3F, the cutoff and
  filter products 7F, s a and the three vec u1 + u2 dir 7F, the four sums 4F; attn_act per
  head) and 28F bytes gathered (k_j, v_j, vec_j). Exact filter + 8RF FLOPs (the four
  projections' rank-one updates), ~16F (activations), ~15R (basis), its weights ([R, 4F]) read
  from L1 once per step of 4 slots (4RF bytes per edge); table + 24F FLOPs (four cubics) and
  64F bytes of coefficient rows gathered (from L2). F=128, R=32: ~38 kFLOP exact, ~6 kFLOP
  table; 3.6 KB gathered (+ 8 KB of table rows);
* receiver backward: ~50F FLOPs of recomputed attention and gradients (q, filter parts,
  cutoff, direction), 12 bytes written (the edge vector's gradient); exact + 16RF (values and
  slopes of the projections) + ~24F, table + 52F (values, slopes, the chain) and 64F bytes of
  coefficients; 28F bytes gathered. F=128, R=32: ~75 kFLOP exact, ~13 kFLOP table;
* sender backward: ~45F FLOPs (attention recomputed, gradients of k, v, vec and their sums);
  20F bytes gathered (q_n, d loss / d m_n, d loss / d mvec_n); exact + 8RF + ~16F, table + 24F
  and 64F bytes. F=128, R=32: ~42 kFLOP exact, ~9 kFLOP table.

The exact filter's projections dominate its kernels (8RF = 32768 FLOPs per edge at F=128, R=32);
with a table the kernels are bound by the gathers (28F + 64F bytes per edge, mostly from L2).
"""

from typing import NamedTuple, Optional, Union

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.edge_math import (
    activation,
    activation_grad,
    cosine_cutoff,
    edge_tile,
    program_rows,
    radial_basis,
    row_sum,
    tile_shape,
)
from ..common.op_args import constant, pack, register_filter, unpack
from ..common.radial_table import KernelTable, table_channels, table_position

# (receivers per program, slots per step) on the GPU, both filter forms. Measured on sm_90 (ptxas,
# F=128, 8 heads, "both"): (1, 4) with 16 warps keeps every kernel at or below 128 registers
# without spills (25 % occupancy); 8 warps spill 12 B in the exact receiver backward, (1, 8) with
# 16 warps reaches 128 registers. At F=64, 8 warps are better (forward 50 %, table forward 37.5 %).
GPU_TILE = (1, 4)
# The kernels' float32 scalar arguments.
FLOAT_SCALARS = ("alpha", "lower", "upper", "loop_cut", "t_lower", "t_upper", "rate", "scale", "slope_scale")


@register_filter
class DistanceFilter(NamedTuple):
    """A layer's exact distance filter: radial basis (code, p0 = means / offsets [R], p1 = betas
    / coefficient [R], alpha, the basis' cutoffs), the filter activation's kernel code and the
    stacked ``[dk_proj; dv_proj]`` (those the layer has): weight transposed [R, C] (rows
    contiguous for the kernels' rank-one updates) and bias [C]."""

    rbf_code: int
    p0: Tensor
    p1: Tensor
    alpha: float
    cutoff_lower: float
    cutoff_upper: float
    activation_code: int
    weight_t: Tensor
    bias: Tensor


class Attention(NamedTuple):
    """What the kernels take of one layer: heads, the attention activation's kernel code, which
    filters it has (distance_influence), vector_cutoff, the cosine cutoff's bounds, its filter
    (:class:`DistanceFilter`, a :class:`~fastnnp.kernels.common.radial_table.KernelTable` of
    ``[dk | dv]`` without the cutoff, or None for distance_influence "none") and that filter at
    d = 0 [C] (the self loops')."""

    num_heads: int
    attn_code: int
    has_keys: bool
    has_values: bool
    vector_cutoff: bool
    cutoff_lower: float
    cutoff_upper: float
    filter: Optional[Union[DistanceFilter, KernelTable]]
    loop_filter: Tensor


@triton.jit
def _channels(H, D, BH: tl.constexpr, BD: tl.constexpr):
    """(channel in [N, F] arrays, s channel in [N, 3F] arrays, mask) [BH BD] of the padded head layout."""
    p = tl.arange(0, BH * BD)
    h = p // BD
    c = p % BD
    return h * D + c, h * (3 * D) + c, (h < H) & (c < D)


@triton.jit
def _rows(ptr, atom, stride, offset, valid, mask):
    """Rows [M, BF] of a per-atom array (``stride`` floats per atom) at channels ``offset`` [BF]."""
    return tl.load(ptr + atom[:, None] * stride + offset[None, :], mask=valid[:, None] & mask[None, :], other=0.0)


@triton.jit
def _head_sum(x, M: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr):
    """[M, BH BD] -> [M, BH]: the sum over each head's channels."""
    return tl.sum(tl.reshape(x, (M, BH, BD)), axis=2)


@triton.jit
def _per_channel(y, M: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr):
    """[M, BH] -> [M, BH BD]: each head's value on its channels."""
    return tl.reshape(tl.broadcast_to(y[:, :, None], (M, BH, BD)), (M, BH * BD))


@triton.jit
def _cutoffs(cut, VC: tl.constexpr):
    """(the attention's, the values' cutoff factor) [M, 1]: cutoff(d) on one of them, 1 on the other."""
    one = tl.full(cut.shape, 1.0, tl.float32)
    if VC:
        return one[:, None], cut[:, None]
    return cut[:, None], one[:, None]


@triton.jit
def _messages(qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, dx, dy, dz,
              ATTN: tl.constexpr, VC: tl.constexpr, M: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr):
    """Per-edge messages [M, BF]: s a (scalar) and vec_j u1 + u2 dir (x, y, z)."""
    ca, cv = _cutoffs(cut, VC)
    a = _per_channel(activation(_head_sum(qi * kj * dk, M, BH, BD), ATTN), M, BH, BD) * ca
    u1 = vu1 * du1 * cv
    u2 = vu2 * du2 * cv
    return vs * ds * cv * a, wx * u1 + u2 * dx[:, None], wy * u1 + u2 * dy[:, None], wz * u1 + u2 * dz[:, None]


@triton.jit
def _edge_grads(qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, dx, dy, dz, gm, gx, gy, gz,
                ATTN: tl.constexpr, VC: tl.constexpr, M: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr):
    """Gradients of one edge's messages given the receiver's incoming gradients ``gm``, ``gx..gz``
    [M, BF]: for q_i, k_j, the three parts of v_j, vec_j (x, y, z), the four filter parts [M, BF],
    the cutoff value and the direction (x, y, z) [M]."""
    ca, cv = _cutoffs(cut, VC)
    z = _head_sum(qi * kj * dk, M, BH, BD)
    act = activation(z, ATTN)
    a = _per_channel(act, M, BH, BD) * ca
    s = vs * ds * cv
    u1 = vu1 * du1 * cv
    u2 = vu2 * du2 * cv
    g_s = gm * a
    g_head = _head_sum(gm * s, M, BH, BD)  # d loss / d (attn_act(z) * ca), per head
    g_u1 = gx * wx + gy * wy + gz * wz
    g_u2 = gx * dx[:, None] + gy * dy[:, None] + gz * dz[:, None]
    g_z = _per_channel(g_head * activation_grad(z, ATTN), M, BH, BD) * ca
    if VC:
        g_cut = tl.sum(g_s * vs * ds + g_u1 * vu1 * du1 + g_u2 * vu2 * du2, axis=1)
    else:
        g_cut = tl.sum(g_head * act, axis=1)
    return (
        g_z * kj * dk, g_z * qi * dk,
        g_s * ds * cv, g_u1 * du1 * cv, g_u2 * du2 * cv,
        gx * u1, gy * u1, gz * u1,
        g_z * qi * kj, g_s * vs * cv, g_u1 * vu1 * cv, g_u2 * vu2 * cv,
        g_cut, tl.sum(gx * u2, axis=1), tl.sum(gy * u2, axis=1), tl.sum(gz * u2, axis=1),
    )


@triton.jit
def _bias(b_ptr, chan, mask, M: tl.constexpr):
    """The bias of channels ``chan`` broadcast to [M, BF] (a projection's starting value)."""
    return tl.zeros((M, chan.shape[0]), tl.float32) + tl.load(b_ptr + chan, mask=mask, other=0.0)[None, :]


@triton.jit
def _add_basis(z, z_slope, b, b_slope, wt_ptr, r, C, chan, mask, SLOPE: tl.constexpr):
    """z (and with SLOPE its d/dd) plus basis function r's term: b [M, 1] times W[chan, r]."""
    w = tl.load(wt_ptr + r * C + chan, mask=mask, other=0.0)[None, :]
    z += b * w
    if SLOPE:
        z_slope += b_slope * w
    return z, z_slope


@triton.jit
def _activated(z, z_slope, ACT: tl.constexpr):
    """act(z) and its d/dd act'(z) dz/dd."""
    return activation(z, ACT), activation_grad(z, ACT) * z_slope


@triton.jit
def _filters(d, valid, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr, f, sv, mask, F, D, R, C, alpha, lower, upper,
             pieces, t_lower, t_upper, rate, scale, slope_scale,
             RBF: tl.constexpr, ACT: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr, TABLE: tl.constexpr,
             RATE: tl.constexpr, T_ZERO: tl.constexpr, T_LOWER: tl.constexpr, SLOPE: tl.constexpr,
             M: tl.constexpr, BF: tl.constexpr):
    """The filter parts dk, ds, du1, du2 [M, BF] (1 where the layer has none), then (with SLOPE)
    their slopes d/dd (0 where none or without SLOPE).

    Exact filter: the projections as R rank-one updates (basis function r [M] times row r of the
    transposed weights [R, C]), FMAs on [M, BF] accumulators with no matmul tile, so any tile
    shape works and nothing but the accumulators is held."""
    one = tl.full((M, BF), 1.0, tl.float32)
    zero = tl.zeros((M, BF), tl.float32)
    dk, ds, du1, du2 = one, one, one, one
    sk, ss, su1, su2 = zero, zero, zero, zero
    s_chan = sv + (F if HAS_DK else 0)
    if TABLE:
        row, u, dt, use = table_position(d, valid, pieces, t_lower, t_upper, rate, scale, slope_scale, RATE, T_ZERO, T_LOWER)
        if HAS_DK:
            dk, sk = table_channels(coef_ptr, row, u, dt, use, f, mask, C, True)
        if HAS_DV:
            ds, ss = table_channels(coef_ptr, row, u, dt, use, s_chan, mask, C, True)
            du1, su1 = table_channels(coef_ptr, row, u, dt, use, s_chan + D, mask, C, True)
            du2, su2 = table_channels(coef_ptr, row, u, dt, use, s_chan + 2 * D, mask, C, True)
    else:
        zk, zs, zu1, zu2 = zero, zero, zero, zero
        if HAS_DK:
            zk = _bias(b_ptr, f, mask, M)
        if HAS_DV:
            zs = _bias(b_ptr, s_chan, mask, M)
            zu1 = _bias(b_ptr, s_chan + D, mask, M)
            zu2 = _bias(b_ptr, s_chan + 2 * D, mask, M)
        one_basis = tl.arange(0, 1)
        for r in range(0, R):
            b, b_slope = radial_basis(d, tl.load(p0_ptr + r + one_basis), tl.load(p1_ptr + r + one_basis),
                                      lower, upper, alpha, RBF)
            if HAS_DK:
                zk, sk = _add_basis(zk, sk, b, b_slope, wt_ptr, r, C, f, mask, SLOPE)
            if HAS_DV:
                zs, ss = _add_basis(zs, ss, b, b_slope, wt_ptr, r, C, s_chan, mask, SLOPE)
                zu1, su1 = _add_basis(zu1, su1, b, b_slope, wt_ptr, r, C, s_chan + D, mask, SLOPE)
                zu2, su2 = _add_basis(zu2, su2, b, b_slope, wt_ptr, r, C, s_chan + 2 * D, mask, SLOPE)
        if HAS_DK:
            dk, sk = _activated(zk, sk, ACT)
        if HAS_DV:
            ds, ss = _activated(zs, ss, ACT)
            du1, su1 = _activated(zu1, su1, ACT)
            du2, su2 = _activated(zu2, su2, ACT)
    return dk, ds, du1, du2, sk, ss, su1, su2


@triton.jit
def _filter_grad(g_dk, g_ds, g_du1, g_du2, sk, ss, su1, su2, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr):
    """d loss / d d [M] through the filter parts, from d loss / d part and d part / d d [M, BF]."""
    g = tl.zeros(g_dk.shape, tl.float32)
    if HAS_DK:
        g += g_dk * sk
    if HAS_DV:
        g += g_ds * ss + g_du1 * su1 + g_du2 * su2
    return tl.sum(g, axis=1)


@triton.jit
def _loop_filters(loop_ptr, f, sv, mask, F, D, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr, BF: tl.constexpr):
    """The filter parts at d = 0 [1, BF] (1 where the layer has none)."""
    one = tl.full((1, BF), 1.0, tl.float32)
    dk, ds, du1, du2 = one, one, one, one
    if HAS_DK:
        dk = tl.load(loop_ptr + f, mask=mask, other=0.0)[None, :]
    if HAS_DV:
        base = F if HAS_DK else 0
        ds = tl.load(loop_ptr + base + sv, mask=mask, other=0.0)[None, :]
        du1 = tl.load(loop_ptr + base + sv + D, mask=mask, other=0.0)[None, :]
        du2 = tl.load(loop_ptr + base + sv + 2 * D, mask=mask, other=0.0)[None, :]
    return dk, ds, du1, du2


@triton.jit
def _features(q_ptr, k_ptr, v_ptr, x_ptr, recv, send, valid, f, sv, mask, F, D):
    """q of the receivers, k, the three parts of v and vec (x, y, z) of the senders [M, BF]."""
    return (
        _rows(q_ptr, recv, F, f, valid, mask), _rows(k_ptr, send, F, f, valid, mask),
        _rows(v_ptr, send, 3 * F, sv, valid, mask), _rows(v_ptr, send, 3 * F, sv + D, valid, mask),
        _rows(v_ptr, send, 3 * F, sv + 2 * D, valid, mask),
        _rows(x_ptr, send, 3 * F, f, valid, mask), _rows(x_ptr, send, 3 * F, f + F, valid, mask),
        _rows(x_ptr, send, 3 * F, f + 2 * F, valid, mask),
    )


@triton.jit
def _incoming(gm_ptr, gv_ptr, atom, valid, f, mask, F):
    """The incoming gradients d loss / d m, d loss / d mvec (x, y, z) [M, BF] of atoms ``atom``."""
    return (
        _rows(gm_ptr, atom, F, f, valid, mask), _rows(gv_ptr, atom, 3 * F, f, valid, mask),
        _rows(gv_ptr, atom, 3 * F, f + F, valid, mask), _rows(gv_ptr, atom, 3 * F, f + 2 * F, valid, mask),
    )


@triton.jit
def _store(ptr, atom, stride, offset, live, mask, value):
    tl.store(ptr + atom[:, None] * stride + offset[None, :], value, mask=live[:, None] & mask[None, :])


@triton.jit
def _unit(ex, ey, ez, d):
    inv = 1.0 / tl.maximum(d, 1.1754943508222875e-38)
    return ex * inv, ey * inv, ez * inv


@triton.jit
def _slot_step(edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
               row0, slot0, f, sv, mask, n_rows, K, F, D, R, C, alpha, lower, upper,
               pieces, t_lower, t_upper, rate, scale, slope_scale,
               RBF: tl.constexpr, ACT: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr, CUT_LOWER: tl.constexpr,
               TABLE: tl.constexpr, RATE: tl.constexpr, T_ZERO: tl.constexpr, T_LOWER: tl.constexpr, SLOPE: tl.constexpr,
               SENDS: tl.constexpr, ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """One step of ``SLOTS`` slots of the program's rows, as every kernel starts it: (receiver,
    valid, edge, unit vector x, y, z, filter parts and their slopes, cutoff and its slope, q_i,
    k_j, v_j's three parts, vec_j x, y, z), each [M] or [M, BF]. A slot (row, other) is the edge
    row <- other, or with ``SENDS`` its reversal other <- row (the row atom as the sender)."""
    M: tl.constexpr = ROWS * SLOTS
    row, other, valid, edge, ex, ey, ez, d = edge_tile(edge_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
    ux, uy, uz = _unit(ex, ey, ez, d)
    dk, ds, du1, du2, sk, ss, su1, su2 = _filters(
        d, valid, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr, f, sv, mask, F, D, R, C, alpha, lower, upper,
        pieces, t_lower, t_upper, rate, scale, slope_scale,
        RBF, ACT, HAS_DK, HAS_DV, TABLE, RATE, T_ZERO, T_LOWER, SLOPE, M, BF)
    cut, cut_slope = cosine_cutoff(d, lower, upper, CUT_LOWER)
    receiver, sender = row, other
    if SENDS:
        receiver, sender = other, row
    qi, kj, vs, vu1, vu2, wx, wy, wz = _features(q_ptr, k_ptr, v_ptr, x_ptr, receiver, sender, valid, f, sv, mask, F, D)
    return (receiver, valid, edge, d, ux, uy, uz, dk, ds, du1, du2, sk, ss, su1, su2, cut, cut_slope,
            qi, kj, vs, vu1, vu2, wx, wy, wz)


@triton.jit
def _self_loops(q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, row0, n_rows, f, sv, mask, F, D, loop_cut,
                HAS_DK: tl.constexpr, HAS_DV: tl.constexpr, ROWS: tl.constexpr, BF: tl.constexpr):
    """The program's rows' self loops (d = 0, direction 0), as every kernel ends: (rows, live,
    filter parts at d = 0, cutoff(0), a zero direction component [ROWS], and the atom's own q, k,
    v's three parts, vec x, y, z [ROWS, BF])."""
    rows = (row0 + tl.arange(0, ROWS)).to(tl.int64)
    live = rows < n_rows
    dk, ds, du1, du2 = _loop_filters(loop_ptr, f, sv, mask, F, D, HAS_DK, HAS_DV, BF)
    cut = tl.zeros((ROWS,), tl.float32) + loop_cut
    nil = tl.zeros((ROWS,), tl.float32)
    qi, kj, vs, vu1, vu2, wx, wy, wz = _features(q_ptr, k_ptr, v_ptr, x_ptr, rows, rows, live, f, sv, mask, F, D)
    return rows, live, dk, ds, du1, du2, cut, nil, qi, kj, vs, vu1, vu2, wx, wy, wz


@triton.jit
def _forward_kernel(
    edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, m_ptr, mv_ptr,
    p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
    n_rows, K, F, H, D, R, C, alpha, lower, upper, loop_cut, pieces, t_lower, t_upper, rate, scale, slope_scale,
    RBF: tl.constexpr, ACT: tl.constexpr, ATTN: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr,
    VC: tl.constexpr, CUT_LOWER: tl.constexpr, TABLE: tl.constexpr, RATE: tl.constexpr, T_ZERO: tl.constexpr,
    T_LOWER: tl.constexpr, ROWS: tl.constexpr, SLOTS: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr,
):
    BF: tl.constexpr = BH * BD
    M: tl.constexpr = ROWS * SLOTS
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f, sv, mask = _channels(H, D, BH, BD)
    acc = tl.zeros((ROWS, BF), tl.float32)
    acc_x = tl.zeros((ROWS, BF), tl.float32)
    acc_y = tl.zeros((ROWS, BF), tl.float32)
    acc_z = tl.zeros((ROWS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        _, _, _, _, ux, uy, uz, dk, ds, du1, du2, _, _, _, _, cut, _, qi, kj, vs, vu1, vu2, wx, wy, wz = _slot_step(
            edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
            row0, slot0, f, sv, mask, n_rows, K, F, D, R, C, alpha, lower, upper, pieces, t_lower, t_upper, rate, scale,
            slope_scale, RBF, ACT, HAS_DK, HAS_DV, CUT_LOWER, TABLE, RATE, T_ZERO, T_LOWER, False, False, ROWS, SLOTS, BF)
        m, mx, my, mz = _messages(qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, -ux, -uy, -uz, ATTN, VC, M, BH, BD)
        acc += row_sum(m, ROWS, SLOTS, BF)
        acc_x += row_sum(mx, ROWS, SLOTS, BF)
        acc_y += row_sum(my, ROWS, SLOTS, BF)
        acc_z += row_sum(mz, ROWS, SLOTS, BF)
    rows, live, dk, ds, du1, du2, cut, nil, qi, kj, vs, vu1, vu2, wx, wy, wz = _self_loops(
        q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, row0, n_rows, f, sv, mask, F, D, loop_cut, HAS_DK, HAS_DV, ROWS, BF)
    m, mx, my, mz = _messages(qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, nil, nil, nil, ATTN, VC, ROWS, BH, BD)
    _store(m_ptr, rows, F, f, live, mask, acc + m)
    _store(mv_ptr, rows, 3 * F, f, live, mask, acc_x + mx)
    _store(mv_ptr, rows, 3 * F, f + F, live, mask, acc_y + my)
    _store(mv_ptr, rows, 3 * F, f + 2 * F, live, mask, acc_z + mz)


@triton.jit
def _receiver_backward_kernel(
    edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, gm_ptr, gv_ptr, gq_ptr, ge_ptr,
    p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
    n_rows, K, F, H, D, R, C, alpha, lower, upper, loop_cut, pieces, t_lower, t_upper, rate, scale, slope_scale,
    RBF: tl.constexpr, ACT: tl.constexpr, ATTN: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr,
    VC: tl.constexpr, CUT_LOWER: tl.constexpr, TABLE: tl.constexpr, RATE: tl.constexpr, T_ZERO: tl.constexpr,
    T_LOWER: tl.constexpr, ROWS: tl.constexpr, SLOTS: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr,
):
    """d loss / d q [N, F] and d loss / d e [N, K, 3] (each slot's edge vector)."""
    BF: tl.constexpr = BH * BD
    M: tl.constexpr = ROWS * SLOTS
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f, sv, mask = _channels(H, D, BH, BD)
    acc = tl.zeros((ROWS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        (row, valid, edge, d, ux, uy, uz, dk, ds, du1, du2, sk, ss, su1, su2, cut, cut_slope,
         qi, kj, vs, vu1, vu2, wx, wy, wz) = _slot_step(
            edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
            row0, slot0, f, sv, mask, n_rows, K, F, D, R, C, alpha, lower, upper, pieces, t_lower, t_upper, rate, scale,
            slope_scale, RBF, ACT, HAS_DK, HAS_DV, CUT_LOWER, TABLE, RATE, T_ZERO, T_LOWER, True, False, ROWS, SLOTS, BF)
        gm, gx, gy, gz = _incoming(gm_ptr, gv_ptr, row, valid, f, mask, F)
        g_q, _, _, _, _, _, _, _, g_dk, g_ds, g_du1, g_du2, g_cut, g_dx, g_dy, g_dz = _edge_grads(
            qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, -ux, -uy, -uz, gm, gx, gy, gz, ATTN, VC, M, BH, BD)
        acc += row_sum(g_q, ROWS, SLOTS, BF)
        g_d = g_cut * cut_slope + _filter_grad(g_dk, g_ds, g_du1, g_du2, sk, ss, su1, su2, HAS_DK, HAS_DV)
        # dir = -e / d: d loss / d e = g_d u - (g_dir - (g_dir . u) u) / d
        radial = g_dx * ux + g_dy * uy + g_dz * uz
        inv = tl.where(valid & (d > 0), 1.0 / tl.where(d > 0, d, 1.0), 0.0)
        along = tl.where(valid & (d > 0), g_d + radial * inv, 0.0)
        tl.store(ge_ptr + 3 * edge, along * ux - g_dx * inv, mask=valid)
        tl.store(ge_ptr + 3 * edge + 1, along * uy - g_dy * inv, mask=valid)
        tl.store(ge_ptr + 3 * edge + 2, along * uz - g_dz * inv, mask=valid)
    rows, live, dk, ds, du1, du2, cut, nil, qi, kj, vs, vu1, vu2, wx, wy, wz = _self_loops(
        q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, row0, n_rows, f, sv, mask, F, D, loop_cut, HAS_DK, HAS_DV, ROWS, BF)
    gm, gx, gy, gz = _incoming(gm_ptr, gv_ptr, rows, live, f, mask, F)
    g_q, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _ = _edge_grads(
        qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, nil, nil, nil, gm, gx, gy, gz, ATTN, VC, ROWS, BH, BD)
    _store(gq_ptr, rows, F, f, live, mask, acc + g_q)


@triton.jit
def _sender_backward_kernel(
    edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, gm_ptr, gv_ptr, gk_ptr, gvv_ptr, gx_ptr,
    p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
    n_rows, K, F, H, D, R, C, alpha, lower, upper, loop_cut, pieces, t_lower, t_upper, rate, scale, slope_scale,
    RBF: tl.constexpr, ACT: tl.constexpr, ATTN: tl.constexpr, HAS_DK: tl.constexpr, HAS_DV: tl.constexpr,
    VC: tl.constexpr, CUT_LOWER: tl.constexpr, TABLE: tl.constexpr, RATE: tl.constexpr, T_ZERO: tl.constexpr,
    T_LOWER: tl.constexpr, ROWS: tl.constexpr, SLOTS: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr,
):
    """d loss / d k [N, F], v [N, 3F], vec [N, 3, F]: row r's slot (n, e) is the reversal of the edge
    n <- r, whose direction from receiver n to sender r is e / d."""
    BF: tl.constexpr = BH * BD
    M: tl.constexpr = ROWS * SLOTS
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f, sv, mask = _channels(H, D, BH, BD)
    a_k = tl.zeros((ROWS, BF), tl.float32)
    a_s = tl.zeros((ROWS, BF), tl.float32)
    a_u1 = tl.zeros((ROWS, BF), tl.float32)
    a_u2 = tl.zeros((ROWS, BF), tl.float32)
    a_x = tl.zeros((ROWS, BF), tl.float32)
    a_y = tl.zeros((ROWS, BF), tl.float32)
    a_z = tl.zeros((ROWS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        (other, valid, _, _, ux, uy, uz, dk, ds, du1, du2, _, _, _, _, cut, _,
         qi, kj, vs, vu1, vu2, wx, wy, wz) = _slot_step(
            edge_ptr, nbr_ptr, counts_ptr, q_ptr, k_ptr, v_ptr, x_ptr, p0_ptr, p1_ptr, wt_ptr, b_ptr, coef_ptr,
            row0, slot0, f, sv, mask, n_rows, K, F, D, R, C, alpha, lower, upper, pieces, t_lower, t_upper, rate, scale,
            slope_scale, RBF, ACT, HAS_DK, HAS_DV, CUT_LOWER, TABLE, RATE, T_ZERO, T_LOWER, False, True, ROWS, SLOTS, BF)
        gm, gx, gy, gz = _incoming(gm_ptr, gv_ptr, other, valid, f, mask, F)
        _, g_k, g_s, g_u1, g_u2, g_x, g_y, g_z, _, _, _, _, _, _, _, _ = _edge_grads(
            qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, ux, uy, uz, gm, gx, gy, gz, ATTN, VC, M, BH, BD)
        a_k += row_sum(g_k, ROWS, SLOTS, BF)
        a_s += row_sum(g_s, ROWS, SLOTS, BF)
        a_u1 += row_sum(g_u1, ROWS, SLOTS, BF)
        a_u2 += row_sum(g_u2, ROWS, SLOTS, BF)
        a_x += row_sum(g_x, ROWS, SLOTS, BF)
        a_y += row_sum(g_y, ROWS, SLOTS, BF)
        a_z += row_sum(g_z, ROWS, SLOTS, BF)
    rows, live, dk, ds, du1, du2, cut, nil, qi, kj, vs, vu1, vu2, wx, wy, wz = _self_loops(
        q_ptr, k_ptr, v_ptr, x_ptr, loop_ptr, row0, n_rows, f, sv, mask, F, D, loop_cut, HAS_DK, HAS_DV, ROWS, BF)
    gm, gx, gy, gz = _incoming(gm_ptr, gv_ptr, rows, live, f, mask, F)
    _, g_k, g_s, g_u1, g_u2, g_x, g_y, g_z, _, _, _, _, _, _, _, _ = _edge_grads(
        qi, kj, vs, vu1, vu2, wx, wy, wz, dk, ds, du1, du2, cut, nil, nil, nil, gm, gx, gy, gz, ATTN, VC, ROWS, BH, BD)
    _store(gk_ptr, rows, F, f, live, mask, a_k + g_k)
    _store(gvv_ptr, rows, 3 * F, sv, live, mask, a_s + g_s)
    _store(gvv_ptr, rows, 3 * F, sv + D, live, mask, a_u1 + g_u1)
    _store(gvv_ptr, rows, 3 * F, sv + 2 * D, live, mask, a_u2 + g_u2)
    _store(gx_ptr, rows, 3 * F, f, live, mask, a_x + g_x)
    _store(gx_ptr, rows, 3 * F, f + F, live, mask, a_y + g_y)
    _store(gx_ptr, rows, 3 * F, f + 2 * F, live, mask, a_z + g_z)


def num_warps(block_channels: int) -> int:
    """Warps per program for channel blocks of ``block_channels`` (BH BD): 16 from 128 on, else 8."""
    return 16 if block_channels >= 128 else 8


def head_blocks(channels: int, num_heads: int) -> tuple[int, int]:
    """(BH, BD) of the padded head layout: the powers of two at or above the heads and the head size."""
    return triton.next_power_of_2(num_heads), triton.next_power_of_2(channels // num_heads)


def _launch(q: Tensor, neighbors: Tensor, kind: str, tensors: list[Tensor], floats: list[float], ints: list[int],
            config: list[int], cutoffs: list[float], dummy: Tensor):
    """(grid, pointer arguments of the filter, scalar arguments, meta) of the three kernels."""
    n_rows, K = neighbors.shape
    F = q.shape[1]
    heads, attn_code, has_dk, has_dv, vector_cutoff = config
    lower, upper = cutoffs
    radial = unpack(kind, tensors, floats, ints) if kind else None
    rows, slots = tile_shape(GPU_TILE)
    bh, bd = head_blocks(F, heads)
    meta = dict(ATTN=attn_code, HAS_DK=bool(has_dk), HAS_DV=bool(has_dv), VC=bool(vector_cutoff), CUT_LOWER=lower > 0,
                TABLE=isinstance(radial, KernelTable), RBF=0, ACT=0, RATE=False, T_ZERO=False, T_LOWER=False,
                ROWS=rows, SLOTS=slots, BH=bh, BD=bd, num_warps=num_warps(bh * bd))
    pointers, R, alpha, table = (dummy,) * 5, 0, 0.0, (0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if isinstance(radial, KernelTable):
        pointers, table = (dummy, dummy, dummy, dummy, radial.coefficients), radial.scalars()
        t = radial.constexprs()
        meta.update(RATE=t["RATE"], T_ZERO=t["ZERO_OUTSIDE"], T_LOWER=t["HAS_LOWER"])
    elif radial is not None:
        pointers, R, alpha = (radial.p0, radial.p1, radial.weight_t, radial.bias, dummy), radial.p0.shape[0], radial.alpha
        meta.update(RBF=radial.rbf_code, ACT=radial.activation_code)
    C = F * has_dk + 3 * F * has_dv
    scalars = (n_rows, K, F, heads, F // heads, R, C, alpha, lower, upper, 1.0 if lower == 0 else 0.0, *table)
    return (triton.cdiv(n_rows, rows),), pointers, scalars, meta


@torch.library.custom_op("fastnnp::et_attention", mutates_args=())
def _attention_op(
    q: Tensor, k: Tensor, v: Tensor, vectors: Tensor, edge_vec: Tensor, neighbors: Tensor, counts: Tensor,
    loop_filter: Tensor, kind: str, tensors: list[Tensor], floats: list[float], ints: list[int],
    config: list[int], cutoffs: list[float],
) -> tuple[Tensor, Tensor]:
    """Forward kernel: (m [N, F], mvec [N, 3, F]); the filter packed by
    :func:`~fastnnp.kernels.common.op_args.pack` (``kind`` "" for none), ``config`` (heads,
    attention activation code, has dk, has dv, vector_cutoff), ``cutoffs`` (lower, upper)."""
    m = torch.empty_like(q)
    mvec = torch.empty_like(vectors)
    grid, pointers, scalars, meta = _launch(q, neighbors, kind, tensors, floats, ints, config, cutoffs, q)
    _forward_kernel[grid](edge_vec, neighbors, counts, q, k, v, vectors, loop_filter, m, mvec, *pointers, *scalars, **meta)
    return m, mvec


@_attention_op.register_fake
def _(q, k, v, vectors, edge_vec, neighbors, counts, loop_filter, kind, tensors, floats, ints, config, cutoffs):
    return torch.empty_like(q), torch.empty_like(vectors)


@torch.library.custom_op("fastnnp::et_attention_backward", mutates_args=())
def _attention_backward_op(
    grad_m: Tensor, grad_mvec: Tensor, q: Tensor, k: Tensor, v: Tensor, vectors: Tensor, edge_vec: Tensor,
    neighbors: Tensor, counts: Tensor, loop_filter: Tensor, kind: str, tensors: list[Tensor], floats: list[float],
    ints: list[int], config: list[int], cutoffs: list[float],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward kernels: gradients of (q, k, v, vectors, edge_vec)."""
    grad_m, grad_mvec = grad_m.contiguous(), grad_mvec.contiguous()
    g_q, g_k, g_v, g_vectors = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(vectors)
    g_edge = torch.zeros_like(edge_vec)
    grid, pointers, scalars, meta = _launch(q, neighbors, kind, tensors, floats, ints, config, cutoffs, q)
    common = (edge_vec, neighbors, counts, q, k, v, vectors, loop_filter, grad_m, grad_mvec)
    _receiver_backward_kernel[grid](*common, g_q, g_edge, *pointers, *scalars, **meta)
    _sender_backward_kernel[grid](*common, g_k, g_v, g_vectors, *pointers, *scalars, **meta)
    return g_q, g_k, g_v, g_vectors, g_edge


@_attention_backward_op.register_fake
def _(grad_m, grad_mvec, q, k, v, vectors, edge_vec, neighbors, counts, loop_filter, kind, tensors, floats, ints,
      config, cutoffs):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(vectors),
            torch.empty_like(edge_vec))


def _setup_context(ctx, inputs, output):
    q, k, v, vectors, edge_vec, neighbors, counts, loop_filter, kind, tensors, floats, ints, config, cutoffs = inputs
    ctx.save_for_backward(q, k, v, vectors, edge_vec, neighbors, counts, loop_filter, *tensors)
    ctx.args = (kind, floats, ints, config, cutoffs)


def _backward(ctx, grad_m, grad_mvec):
    q, k, v, vectors, edge_vec, neighbors, counts, loop_filter, *tensors = ctx.saved_tensors
    kind, floats, ints, config, cutoffs = ctx.args
    grad_m = torch.zeros_like(q) if grad_m is None else grad_m
    grad_mvec = torch.zeros_like(vectors) if grad_mvec is None else grad_mvec
    grads = _attention_backward_op(
        grad_m, grad_mvec, q, k, v, vectors, edge_vec, neighbors, counts, loop_filter,
        kind, tensors, floats, ints, config, cutoffs,
    )
    # torch.library's gradient structure: None per tensor of a list, None for a list of numbers (an empty list: [])
    numbers = [None if a else [] for a in (floats, ints)]
    return (*grads, None, None, None, None, [None] * len(tensors), *numbers, None, None)


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _check(q: Tensor, k: Tensor, v: Tensor, vectors: Tensor, edge_vec: Tensor, neighbors: Tensor, counts: Tensor,
           attention: Attention) -> None:
    """Shapes, dtypes and the layer description, on the host (no device sync)."""
    n, f = q.shape if q.dim() == 2 else (-1, -1)
    if k.shape != q.shape or v.shape != (n, 3 * f) or vectors.shape != (n, 3, f):
        raise ValueError(
            f"attention_messages needs q, k [N, F], v [N, 3F], vectors [N, 3, F]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}, {tuple(vectors.shape)}"
        )
    if neighbors.dim() != 2 or neighbors.shape[0] != n or edge_vec.shape != (*neighbors.shape, 3) or counts.shape != (n,):
        raise ValueError(
            f"attention_messages needs edge_vec [N, K, 3], neighbors [N, K], counts [N] for N = {n}; got "
            f"{tuple(edge_vec.shape)}, {tuple(neighbors.shape)}, {tuple(counts.shape)}"
        )
    if any(t.dtype != torch.float32 for t in (q, k, v, vectors, edge_vec)):
        raise ValueError("attention_messages runs float32 only")
    if neighbors.dtype != torch.int32 or counts.dtype != torch.int32:
        raise ValueError(f"neighbors and counts must be int32, got {neighbors.dtype} and {counts.dtype}")
    if f % attention.num_heads != 0:
        raise ValueError(f"{f} channels are not divisible by {attention.num_heads} heads")
    if (attention.filter is None) != (not attention.has_keys and not attention.has_values):
        raise ValueError("a layer with distance filters needs a filter description, one without none")
    channels = f * attention.has_keys + 3 * f * attention.has_values
    if attention.filter is not None:
        have = attention.filter.channels if isinstance(attention.filter, KernelTable) else attention.filter.bias.shape[0]
        if have != channels or attention.loop_filter.shape != (channels,):
            raise ValueError(
                f"the layer's filter has {have} channels and its self-loop filter {tuple(attention.loop_filter.shape)}, "
                f"the features need {channels}"
            )


def attention_messages(
    q: Tensor, k: Tensor, v: Tensor, vectors: Tensor, edge_vec: Tensor, neighbors: Tensor, counts: Tensor,
    attention: Attention,
) -> tuple[Tensor, Tensor]:
    """(m [N, F], mvec [N, 3, F]) of one ET layer (module docstring).

    ``q``, ``k`` [N, F], ``v`` [N, 3F] the projections, ``vectors`` [N, 3, F] the vector features,
    ``edge_vec`` [N, K, 3] the edge vectors of the table rows ``neighbors`` [N, K] (int32) with
    ``counts`` [N] (int32) valid slots (both directions of every pair listed, as the neighbour
    search gives: the backward relies on it); float32, on one device. ``attention`` describes
    the layer. Differentiable in q, k, v, vectors and edge_vec (the filter is a constant); the
    registered op ``torch.ops.fastnnp.et_attention`` (backward ``fastnnp::et_attention_backward``).
    """
    _check(q, k, v, vectors, edge_vec, neighbors, counts, attention)
    kind, tensors, floats, ints = ("", [], [], []) if attention.filter is None else pack(attention.filter)
    config = [attention.num_heads, attention.attn_code, int(attention.has_keys), int(attention.has_values),
              int(attention.vector_cutoff)]
    return _attention_op(
        q.contiguous(), k.contiguous(), v.contiguous(), vectors.contiguous(), edge_vec.contiguous(),
        neighbors.contiguous(), counts.contiguous(), constant(attention.loop_filter), kind,
        [constant(t) for t in tensors], floats, ints, config, [attention.cutoff_lower, attention.cutoff_upper],
    )


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The three kernels at production shape (8 heads) with distance_influence "both", no
    vector cutoff, no lower cutoff: the exact filter (expnorm basis) and a rate > 0 table."""
    bh, bd = head_blocks(channels, 8)
    rows, slots = GPU_TILE
    base = dict(ATTN=0, ACT=0, HAS_DK=True, HAS_DV=True, VC=False, CUT_LOWER=False, RBF=0, T_ZERO=False, T_LOWER=False,
                ROWS=rows, SLOTS=slots, BH=bh, BD=bd)
    pointers = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    return [
        CompileCase(fn, dict(base, TABLE=table, RATE=table), pointers, FLOAT_SCALARS, num_warps(bh * bd))
        for table in (False, True)
        for fn in (_forward_kernel, _receiver_backward_kernel, _sender_backward_kernel)
    ]
