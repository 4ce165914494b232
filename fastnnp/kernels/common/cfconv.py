"""Continuous-filter convolution: radial filter and aggregation over a neighbour table, fused.

For receiver i and its slots k < counts[i] in a padded
:class:`~fastnnp.kernels.common.neighbor_search.NeighborTable` (sender j_ik, edge vector v_ik
[3] in the checkpoint's length unit, d_ik = |v_ik|)::

    out[i, f] = aggr_k  W(d_ik)[f] * h[j_ik, f]                             [N, F]

with TorchMD-Net 3.x's reductions (:func:`fastnnp.models.common.scatter.scatter`), which include
the zero the output starts from: "add" sums, "mean" divides the sum by counts[i] + 1, "max" is
never below 0 (an atom without neighbours gets 0). The filter W [F] is one of

* :class:`ConvFilter`, computed per edge: radial basis (expnorm or gauss) -> Linear(R, F), or
  -> Linear(R, H) -> activation -> Linear(H, F), times the cosine cutoff. One linear is the
  neighbour embedding's ``distance_proj`` (GN and ET), two the GN interaction's ``CFConv.net``.
  The hidden layer is streamed ``KC`` units at a time (``tl.dot`` tiles [M, KC] and [KC, F]),
  so no [M, H] tile and no weight tile larger than [KC, max(R, F)] is held;
* a :class:`~fastnnp.kernels.common.radial_table.KernelTable` with C = F channels (the filter
  times the cutoff, 0 outside its support): one gather of the edge's piece (4 x F floats) and a
  cubic in u.

Each program takes ``ROWS`` receivers and walks their slots ``SLOTS`` at a time (GPU tiles, warps
and stages per filter kind: :func:`gpu_launch`); the sums and
maxima are register reductions (no atomics) and nothing per edge is written in the forward
pass; with "max" the forward also writes, per atom and channel, the slot that holds the maximum
(-1: the initial zero) [N, F] int32.

Backward (parameters are constants): d loss / d v_ik = g_d v_ik / d with
g_d = sum_f G_ik[f] dW_ik[f]/dd, G_ik = (d loss / d out[i]) * h[j_ik] (times 1 / (counts[i] + 1)
for "mean"; for "max" only in the channels whose maximum slot k is), backpropagated through
the table's slope or the filter (recomputed). For h:

* "add" and "mean" use the table's symmetry (it lists both directions of every pair, with the
  same length, as the neighbour search builds it): grad_h[j] = sum_k W(d_jk) g'[n_jk] over j's
  own row, with g' = grad (divided by counts + 1 for "mean"): a gather, no atomics;
* "max" routes each (i, f)'s gradient to its maximising slot and adds W * grad to that slot's
  sender with fp32 atomics (at most one per receiver and channel). Ties go to the first
  maximising slot, and the initial zero wins a tie with a message (torch's scatter_reduce
  splits tied gradients evenly; ties have measure zero for real-valued filters).

Work per directed edge (F channels, R basis functions, H hidden units, fp32, an FMA = 2 FLOPs;
in brackets at F = H = 128, R = 32). Matmul FLOPs dominate the exact filters:

* two linears: forward 2RH + 2HF + ~15R (basis) + ~5H (activation) + 3F (product, sum)
  [42.5 k]; backward recomputes z1, z2 and adds g_h1 = g_z2 W2, g_rbf = g_z1 W1:
  4RH + 4HF + ~10H + ~10F [83.5 k];
* one linear: forward 2RF + ~15R + 3F [9.1 k]; backward 4RF + ~15R + ~10F [18 k];
* table: forward ~10 + 8F [1.0 k]; backward ~10 + 20F [2.6 k];
* bytes, forward: 4 (sender) + 12 (vector) + 4F (h[j], a gather) [528 B], the table adds 16F
  (the piece's four coefficient rows, from L2) [2.6 kB]; per atom 4F written (and 4F of slots
  for "max"). Backward ("add", "mean"): 16 + 4F (h[n]) + 4F (g[r], the row's own, cached) + 4F
  (g[n]) + 12 written [1.56 kB], the table adds 16F; "max" reads 4F (slots) instead of g[n]
  and makes F / (neighbours) atomic adds per edge on average. The exact filters re-read their
  weights from L1/L2 once per tile step of 16 edges: 4 (RH + HF + H + F) / 16 [5.2 kB] per edge
  for two linears, 4 (RF + F) / 16 [1.0 kB] for one.
"""

from typing import NamedTuple, Optional, Union

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from .basis import kernel_basis
from .compile_case import CompileCase
from .edge_math import (
    activation, activation_grad, cosine_cutoff, edge_tile, program_rows, radial_basis, row_sum, store_vector_gradient,
    tile_shape,
)
from .op_args import constant, pack, register_filter, unpack
from .radial_table import KernelTable, kernel_table, table_channels, table_position

AGGREGATIONS = {"add": 0, "mean": 1, "max": 2}
# Hidden units of a two-linear filter per step.
HIDDEN_CHUNK = 8
FLOAT_ARGS = ("alpha", "lower", "upper", "rate", "scale", "slope_scale")


@register_filter
class ConvFilter(NamedTuple):
    """An exact continuous filter: basis, cutoffs, the first linear (``nn.Linear`` layout
    [out, in]) and, when ``w2`` is not empty, an activation and a second linear.

    One linear: w1 [F, R], b1 [F], w2 and b2 empty ([0, F], [0]), ``activation_code`` unused.
    Two linears: w1 [H, R], b1 [H], w2 [F, H], b2 [F].
    """

    rbf_code: int
    p0: Tensor  # [R] expnorm means / gauss offsets
    p1: Tensor  # [R] expnorm betas / gauss coefficient (broadcast)
    alpha: float
    cutoff_lower: float
    cutoff_upper: float
    activation_code: int
    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    @property
    def channels(self) -> int:
        return self.w2.shape[0] if self.w2.numel() else self.w1.shape[0]


# What the kernels take as a filter: the exact one, or a table of it.
Filter = Union[ConvFilter, KernelTable]


def conv_filter(
    expansion: nn.Module, first: nn.Linear, cutoff_lower: float, cutoff_upper: float,
    second: Optional[nn.Linear] = None, activation_code: int = 0,
) -> ConvFilter:
    """The kernels' :class:`ConvFilter` of ``first`` (and ``activation_code``, ``second``) after
    the radial basis module ``expansion`` (ExpNormalSmearing or GaussianSmearing), times the
    cosine cutoff on [cutoff_lower, cutoff_upper]; tensors detached (constants)."""
    w1, b1 = constant(first.weight), constant(first.bias)
    if second is None:
        w2, b2 = w1.new_zeros(0, w1.shape[0]), w1.new_zeros(0)
    else:
        w2, b2 = constant(second.weight), constant(second.bias)
    return ConvFilter(*kernel_basis(expansion), float(cutoff_lower), float(cutoff_upper), activation_code, w1, b1, w2, b2)


def neighbor_embedding_filter(
    embedding: nn.Module, expansion: nn.Module, cutoff_lower: float, cutoff_upper: float
) -> Union[ConvFilter, KernelTable]:
    """The kernels' filter of a :class:`~fastnnp.models.common.neighbor_embedding.NeighborEmbedding`
    (ET's and GN's): its radial table when one is attached, else ``distance_proj`` after the basis."""
    if embedding.radial_table is not None:
        return kernel_table(embedding.radial_table)
    return conv_filter(expansion, embedding.distance_proj, cutoff_lower, cutoff_upper)


@triton.jit
def _rows(ptr, atom, F, valid, BF: tl.constexpr):
    """Rows [M, BF] of a per-atom [N, F] float32 array at ``atom`` [M] (0 where not ``valid``)."""
    f = tl.arange(0, BF)
    return tl.load(ptr + atom[:, None] * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=0.0)


@triton.jit
def _table_lookup(coef_ptr, d, valid, F, pieces, lower, upper, rate, scale, slope_scale,
                  RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr, BF: tl.constexpr):
    """(value, d value / dd) [M, BF] of a table with C = F channels: the edge's piece gathered
    once, both from the same cubic, 0 outside the support and where not ``valid``."""
    row, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale, RATE, ZERO_OUTSIDE, HAS_LOWER)
    f = tl.arange(0, BF)
    return table_channels(coef_ptr, row, u, dt, use, f, f < F, F, True)


@triton.jit
def _basis(d, p0_ptr, p1_ptr, R, alpha, lower, upper, RBF: tl.constexpr, BR: tl.constexpr):
    """Radial basis values and slopes [M, BR] (0 beyond R)."""
    r = tl.arange(0, BR)
    p0 = tl.load(p0_ptr + r, mask=r < R, other=0.0)
    p1 = tl.load(p1_ptr + r, mask=r < R, other=0.0)
    rbf, slope = radial_basis(d, p0, p1, lower, upper, alpha, RBF)
    inside = (r < R)[None, :]
    return tl.where(inside, rbf, 0.0), tl.where(inside, slope, 0.0)


@triton.jit
def _first_weights(w1_ptr, k0, rows, R, BR: tl.constexpr, KC: tl.constexpr):
    """W1[k0 .. k0 + KC, :] transposed, [BR, KC] (0 beyond ``rows`` x R)."""
    r = tl.arange(0, BR)
    k = k0 + tl.arange(0, KC)
    return tl.load(w1_ptr + k[None, :] * R + r[:, None], mask=(r[:, None] < R) & (k[None, :] < rows), other=0.0)


@triton.jit
def _second_weights(w2_ptr, k0, H, F, BF: tl.constexpr, KC: tl.constexpr):
    """W2[:, k0 .. k0 + KC], [BF, KC] (0 beyond F x H)."""
    f = tl.arange(0, BF)
    k = k0 + tl.arange(0, KC)
    return tl.load(w2_ptr + f[:, None] * H + k[None, :], mask=(f[:, None] < F) & (k[None, :] < H), other=0.0)


@triton.jit
def _vector(ptr, start, n, B: tl.constexpr):
    """Entries start .. start + B of a float32 vector [B] (0 from ``n`` on)."""
    i = tl.arange(0, B)
    return tl.load(ptr + start + i, mask=i < n, other=0.0)


@triton.jit
def _exact_filter(d, G, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, R, H, F, alpha, lower, upper,
                  RBF: tl.constexpr, ACT: tl.constexpr, TWO: tl.constexpr, HAS_LOWER: tl.constexpr,
                  GRAD: tl.constexpr, PRECISION: tl.constexpr, M: tl.constexpr, BR: tl.constexpr,
                  BF: tl.constexpr, KC: tl.constexpr):
    """(W [M, BF], and with ``GRAD`` g_d = sum_f G[:, f] dW[:, f]/dd [M], else 0) of the exact filter."""
    rbf, rbf_slope = _basis(d, p0_ptr, p1_ptr, R, alpha, lower, upper, RBF, BR)
    cut, cut_slope = cosine_cutoff(d, lower, upper, HAS_LOWER)
    g_d = tl.zeros_like(d)
    if TWO:
        z2 = tl.zeros((M, BF), tl.float32) + _vector(b2_ptr, 0, F, BF)[None, :]
        g_z2 = G * cut[:, None]
        g_rbf = tl.zeros((M, BR), tl.float32)
        for k0 in range(0, H, KC):
            z1 = tl.dot(rbf, _first_weights(w1_ptr, k0, H, R, BR, KC), input_precision=PRECISION)
            z1 += _vector(b1_ptr, k0, H - k0, KC)[None, :]
            w2 = _second_weights(w2_ptr, k0, H, F, BF, KC)
            z2 += tl.dot(activation(z1, ACT), tl.trans(w2), input_precision=PRECISION)
            if GRAD:
                g_z1 = tl.dot(g_z2, w2, input_precision=PRECISION) * activation_grad(z1, ACT)
                g_rbf += tl.dot(g_z1, tl.trans(_first_weights(w1_ptr, k0, H, R, BR, KC)), input_precision=PRECISION)
        z = z2
    else:
        z = tl.dot(rbf, _first_weights(w1_ptr, 0, F, R, BR, BF), input_precision=PRECISION)
        z += _vector(b1_ptr, 0, F, BF)[None, :]
        if GRAD:
            g_rbf = tl.dot(G * cut[:, None], tl.trans(_first_weights(w1_ptr, 0, F, R, BR, BF)), input_precision=PRECISION)
    if GRAD:
        g_d = tl.sum(g_rbf * rbf_slope, axis=1) + tl.sum(G * z, axis=1) * cut_slope
    return z * cut[:, None], g_d


@triton.jit
def _filter(d, valid, G, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
            R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
            TABLE: tl.constexpr, RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, RBF: tl.constexpr,
            ACT: tl.constexpr, TWO: tl.constexpr, HAS_LOWER: tl.constexpr, GRAD: tl.constexpr,
            PRECISION: tl.constexpr, M: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr):
    """(W [M, BF], g_d [M]) of the table or the exact filter (g_d = 0 unless ``GRAD``)."""
    if TABLE:
        w, slope = _table_lookup(coef_ptr, d, valid, F, pieces, lower, upper, rate, scale, slope_scale,
                                 RATE, ZERO_OUTSIDE, HAS_LOWER, BF)
        g_d = tl.zeros_like(d)
        if GRAD:
            g_d = tl.sum(G * slope, axis=1)
    else:
        w, g_d = _exact_filter(d, G, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, R, H, F, alpha, lower, upper,
                               RBF, ACT, TWO, HAS_LOWER, GRAD, PRECISION, M, BR, BF, KC)
    return w, g_d


@triton.jit
def _store_rows(ptr, values, row0, n_rows, F, ROWS: tl.constexpr, BF: tl.constexpr):
    """Rows row0 .. row0 + ROWS of a per-atom [N, F] array from ``values`` [ROWS, BF]."""
    rows = row0 + tl.arange(0, ROWS)
    f = tl.arange(0, BF)
    tl.store(ptr + rows[:, None].to(tl.int64) * F + f[None, :], values, mask=(rows[:, None] < n_rows) & (f[None, :] < F))


@triton.jit
def _forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, h_ptr, out_ptr, arg_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
    n_rows, K, R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
    TABLE: tl.constexpr, RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, RBF: tl.constexpr, ACT: tl.constexpr,
    TWO: tl.constexpr, HAS_LOWER: tl.constexpr, AGGR: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    acc = tl.zeros((ROWS, BF), tl.float32)
    arg = tl.full((ROWS, BF), -1, tl.int32)
    none = tl.zeros((ROWS * SLOTS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        w, _ = _filter(d, valid, none, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
                       R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
                       TABLE, RATE, ZERO_OUTSIDE, RBF, ACT, TWO, HAS_LOWER, False, PRECISION, ROWS * SLOTS, BR, BF, KC)
        message = w * _rows(h_ptr, sender, F, valid, BF)  # 0 in the padding
        if AGGR == 2:
            tile = tl.reshape(message, (ROWS, SLOTS, BF))
            best, at = tl.max(tile, axis=1, return_indices=True, return_indices_tie_break_left=True)
            better = best > acc  # the initial zero and earlier slots win ties
            arg = tl.where(better, slot0 + at.to(tl.int32), arg)
            acc = tl.where(better, best, acc)
        else:
            acc += row_sum(message, ROWS, SLOTS, BF)
    if AGGR == 1:
        rows = row0 + tl.arange(0, ROWS)
        acc = acc / (tl.load(counts_ptr + rows, mask=rows < n_rows, other=0) + 1).to(tl.float32)[:, None]
    _store_rows(out_ptr, acc, row0, n_rows, F, ROWS, BF)
    if AGGR == 2:
        _store_rows(arg_ptr, arg, row0, n_rows, F, ROWS, BF)


@triton.jit
def _scaled_rows(grad_ptr, counts_ptr, atom, F, valid, AGGR: tl.constexpr, BF: tl.constexpr):
    """The incoming gradient's rows at ``atom``, divided by counts + 1 for "mean"."""
    g = _rows(grad_ptr, atom, F, valid, BF)
    if AGGR == 1:
        g = g / (tl.load(counts_ptr + atom, mask=valid, other=0) + 1).to(tl.float32)[:, None]
    return g


@triton.jit
def _backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, h_ptr, grad_ptr, grad_h_ptr, grad_vec_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
    n_rows, K, R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
    TABLE: tl.constexpr, RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, RBF: tl.constexpr, ACT: tl.constexpr,
    TWO: tl.constexpr, HAS_LOWER: tl.constexpr, AGGR: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    """"add" / "mean": row r's edge vectors from g'[r] h[n], and grad_h[r] = sum_k W g'[n] (symmetry)."""
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    acc = tl.zeros((ROWS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        G = _scaled_rows(grad_ptr, counts_ptr, row, F, valid, AGGR, BF) * _rows(h_ptr, sender, F, valid, BF)
        w, g_d = _filter(d, valid, G, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
                         R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
                         TABLE, RATE, ZERO_OUTSIDE, RBF, ACT, TWO, HAS_LOWER, True, PRECISION, ROWS * SLOTS, BR, BF, KC)
        acc += row_sum(w * _scaled_rows(grad_ptr, counts_ptr, sender, F, valid, AGGR, BF), ROWS, SLOTS, BF)
        store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d)
    _store_rows(grad_h_ptr, acc, row0, n_rows, F, ROWS, BF)


@triton.jit
def _max_backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, h_ptr, grad_ptr, arg_ptr, grad_h_ptr, grad_vec_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
    n_rows, K, R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
    TABLE: tl.constexpr, RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, RBF: tl.constexpr, ACT: tl.constexpr,
    TWO: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    """"max": each (i, f)'s gradient to its maximising slot; grad_h (zeroed) by fp32 atomic adds."""
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f = tl.arange(0, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        slot = (edge - row * K).to(tl.int32)
        chosen = (tl.load(arg_ptr + row[:, None] * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=-1)
                  == slot[:, None]) & valid[:, None]
        share = tl.where(chosen, _rows(grad_ptr, row, F, valid, BF), 0.0)
        G = share * _rows(h_ptr, sender, F, valid, BF)
        w, g_d = _filter(d, valid, G, p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, coef_ptr,
                         R, H, F, pieces, alpha, lower, upper, rate, scale, slope_scale,
                         TABLE, RATE, ZERO_OUTSIDE, RBF, ACT, TWO, HAS_LOWER, True, PRECISION, ROWS * SLOTS, BR, BF, KC)
        tl.atomic_add(grad_h_ptr + sender[:, None] * F + f[None, :], share * w, mask=chosen)
        store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d)


class Launch(NamedTuple):
    """A kernel's GPU launch: (receivers, slots) per program step, warps, pipelining stages
    (None: Triton's default)."""

    tile: tuple[int, int]
    num_warps: int
    num_stages: Optional[int]


# Measured on sm_90 (ptxas via ``python -m fastnnp.kernels.compile_check``; registers, spill
# bytes, theoretical occupancy). The exact filters need M = ROWS x SLOTS >= 16 for ``tl.dot``;
# ``tl.dot`` in ieee float32 is FMAs on a blocked layout whose operands grow with F per thread,
# so more warps (fewer elements per thread) is what removed the spills:
# * table, (1, 16) at 4 warps: 146-255 registers, 20 B spills (max backward), 12.5 %; (1, 8) at
#   8 warps: 48-96, 25-62 %; (1, 4) at 8 warps: F=128 32 / 60 / 48 registers (forward, backward,
#   max backward), 100 / 50 / 62 % -- used;
# * two linears, F=128: 4 warps KC 16: 255 registers, 24-104 B spills, 12.5 %; 8 warps: 176-255,
#   up to 12 B, 12.5 %; 16 warps KC 16: backward 20-44 B; 16 warps KC 8, 1 stage: 88 / 104 / 106,
#   no spills, 25 % -- used (F=64: forward at 1 stage 12 B spills in "max", default stages 72);
# * one linear, F=128: forward 16 warps 52-62 registers, 50 %; backward 8 warps 193, 12.5 %,
#   16 warps 104-128 with 24-48 B spills, 32 warps 1 stage 62-64, no spills, 50 % -- used (F=64:
#   32 warps spills 16-24 B at the 64-register cap, 16 warps 1 stage 74-84, 25 %).


def gpu_launch(kind: str, backward: bool, block_f: int) -> Launch:
    """The GPU launch of the ``kind`` ("table", "one", "two" linears) forward or backward
    kernel at BF = ``block_f``; the interpreter uses only the kind of tile (edge_math)."""
    wide = block_f > 64
    if kind == "table":
        return Launch((1, 4), 8, None)
    if kind == "one":
        return Launch((1, 16), 32 if backward and wide else 16, 1)
    return Launch((1, 16), 16, 1 if backward or wide else None)


def filter_kind(flt: Filter) -> str:
    """"table", or the number of linears of an exact filter ("one", "two")."""
    if isinstance(flt, KernelTable):
        return "table"
    return "two" if flt.w2.numel() else "one"


def _launch(flt: Filter, h: Tensor, neighbors: Tensor, precision: str, backward: bool):
    """(grid, filter tensors, scalar arguments, meta) of a cfconv kernel; unused tensors are ``h``."""
    n_rows, K = neighbors.shape
    F = h.shape[1]
    kind = filter_kind(flt)
    BF = max(16, triton.next_power_of_2(F))
    launch = gpu_launch(kind, backward, BF)
    rows, slots = tile_shape(launch.tile)
    meta = dict(ROWS=rows, SLOTS=slots, BF=BF, PRECISION=precision, num_warps=launch.num_warps)
    if launch.num_stages is not None:
        meta["num_stages"] = launch.num_stages
    if kind == "table":
        tensors = (h,) * 6 + (flt.coefficients,)
        scalars = (n_rows, K, 1, 1, F, flt.pieces, 0.0, flt.lower, flt.upper, flt.rate, flt.scale, flt.slope_scale)
        meta.update(TABLE=True, **flt.constexprs(), RBF=0, ACT=0, TWO=False, BR=16, KC=16)
    else:
        two = kind == "two"
        H, R = flt.w1.shape
        tensors = (flt.p0, flt.p1, flt.w1, flt.b1, flt.w2 if two else h, flt.b2 if two else h, h)
        scalars = (n_rows, K, R, H, F, 1, flt.alpha, flt.cutoff_lower, flt.cutoff_upper, 0.0, 1.0, 1.0)
        meta.update(
            TABLE=False, RATE=False, ZERO_OUTSIDE=False, HAS_LOWER=flt.cutoff_lower > 0, RBF=flt.rbf_code,
            ACT=flt.activation_code, TWO=two, BR=max(16, triton.next_power_of_2(R)), KC=HIDDEN_CHUNK,
        )
    return (triton.cdiv(n_rows, rows),), tensors, scalars, meta


@torch.library.custom_op("fastnnp::cfconv", mutates_args=())
def _cfconv_op(
    vec: Tensor, h: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], aggr: str, precision: str,
) -> tuple[Tensor, Tensor]:
    """(out [N, F], the maximising slot [N, F] int32 for "max", else an empty int32 tensor)."""
    out = torch.empty_like(h)
    arg = torch.empty(h.shape if aggr == "max" else (0,), dtype=torch.int32, device=h.device)
    if h.shape[0]:
        grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), h, neighbors, precision, False)
        _forward_kernel[grid](vec, neighbors, counts, h, out, arg if aggr == "max" else neighbors, *weights, *scalars,
                              AGGR=AGGREGATIONS[aggr], **meta)
    return out, arg


@_cfconv_op.register_fake
def _(vec, h, neighbors, counts, kind, tensors, floats, ints, aggr, precision):
    return torch.empty_like(h), h.new_empty(h.shape if aggr == "max" else (0,), dtype=torch.int32)


@torch.library.custom_op("fastnnp::cfconv_backward", mutates_args=())
def _cfconv_backward_op(
    grad: Tensor, vec: Tensor, h: Tensor, neighbors: Tensor, counts: Tensor, arg: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], aggr: str, precision: str,
) -> tuple[Tensor, Tensor]:
    """(gradient of the edge vectors [N, K, 3], of the features [N, F])."""
    grad_vec = torch.zeros_like(vec)
    grad_h = torch.zeros_like(h) if aggr == "max" else torch.empty_like(h)
    if h.shape[0]:
        grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), h, neighbors, precision, True)
        if aggr == "max":
            _max_backward_kernel[grid](vec, neighbors, counts, h, grad.contiguous(), arg, grad_h, grad_vec,
                                       *weights, *scalars, **meta)
        else:
            _backward_kernel[grid](vec, neighbors, counts, h, grad.contiguous(), grad_h, grad_vec, *weights, *scalars,
                                   AGGR=AGGREGATIONS[aggr], **meta)
    return grad_vec, grad_h


@_cfconv_backward_op.register_fake
def _(grad, vec, h, neighbors, counts, arg, kind, tensors, floats, ints, aggr, precision):
    return torch.empty_like(vec), torch.empty_like(h)


def _setup_context(ctx, inputs, output):
    vec, h, neighbors, counts, kind, tensors, floats, ints, aggr, precision = inputs
    ctx.save_for_backward(vec, h, neighbors, counts, output[1], *tensors)
    ctx.filter_args = (kind, floats, ints, aggr, precision)


def _backward(ctx, grad, _grad_arg):
    vec, h, neighbors, counts, arg, *tensors = ctx.saved_tensors
    kind, floats, ints, aggr, precision = ctx.filter_args
    grad_vec, grad_h = _cfconv_backward_op(grad, vec, h, neighbors, counts, arg, kind, tensors, floats, ints, aggr, precision)
    return grad_vec, grad_h, None, None, None, [None] * len(tensors), None, None, None, None


_cfconv_op.register_autograd(_backward, setup_context=_setup_context)


def _check(vec: Tensor, h: Tensor, neighbors: Tensor, counts: Tensor, flt: Filter, aggr: str, precision: str) -> None:
    """Shapes, dtypes and options, on the host (no device sync)."""
    if aggr not in AGGREGATIONS:
        raise ValueError(f"unknown aggr {aggr!r}; cfconv has {', '.join(AGGREGATIONS)}")
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"precision must be 'ieee' or 'tf32', got {precision!r}")
    if vec.dtype != torch.float32 or h.dtype != torch.float32:
        raise ValueError(f"cfconv runs float32 only, got vec {vec.dtype} and h {h.dtype}")
    if neighbors.dtype != torch.int32 or counts.dtype != torch.int32:
        raise ValueError(f"neighbors and counts must be int32, got {neighbors.dtype} and {counts.dtype}")
    N, K = neighbors.shape
    if vec.shape != (N, K, 3) or counts.shape != (N,) or h.dim() != 2 or h.shape[0] != N:
        raise ValueError(
            f"cfconv needs vec [N, K, 3], h [N, F], neighbors [N, K], counts [N]; got {tuple(vec.shape)}, "
            f"{tuple(h.shape)}, {tuple(neighbors.shape)}, {tuple(counts.shape)}"
        )
    if not isinstance(flt, (ConvFilter, KernelTable)):
        raise TypeError(f"filter must be a ConvFilter or a KernelTable, got {type(flt).__name__}")
    if flt.channels != h.shape[1]:
        raise ValueError(f"the filter has {flt.channels} channels, the features {h.shape[1]}")
    if isinstance(flt, ConvFilter):
        if flt.p0.shape != (flt.w1.shape[1],) or flt.p1.shape != flt.p0.shape:
            raise ValueError(f"the filter's basis has {tuple(flt.p0.shape)} parameters, its first linear takes {flt.w1.shape[1]}")
        if flt.w2.numel() and flt.w2.shape[1] != flt.w1.shape[0]:
            raise ValueError(f"the filter's linears do not chain: w1 {tuple(flt.w1.shape)}, w2 {tuple(flt.w2.shape)}")


def cfconv(
    vec: Tensor, h: Tensor, neighbors: Tensor, counts: Tensor, filter: Filter, aggr: str, precision: str = "ieee"
) -> Tensor:
    """Continuous-filter convolution [N, F]: aggr over slots k < counts[i] of W(|vec[i, k]|) h[j_ik].

    ``vec`` [N, K, 3] float32 edge vectors of the table rows ``neighbors`` [N, K] int32 with
    ``counts`` [N] int32 valid slots (both directions of every pair listed, as the neighbour
    search builds them: "add" and "mean" backward rely on it); ``h`` [N, F] float32 the
    senders' features; ``filter`` a :class:`ConvFilter` (exact) or a
    :class:`~fastnnp.kernels.common.radial_table.KernelTable` with F channels; ``aggr`` "add",
    "mean" or "max" with TorchMD-Net 3.x's semantics (module docstring). ``precision`` is the
    exact filter's ``tl.dot`` input precision ("ieee" exact float32, or "tf32"). Differentiable
    in ``vec`` and ``h`` (the filter's tensors are constants); the registered op
    ``torch.ops.fastnnp.cfconv`` (backward ``fastnnp::cfconv_backward``).
    """
    _check(vec, h, neighbors, counts, filter, aggr, precision)
    return _cfconv_op(
        vec.contiguous(), h.contiguous(), neighbors.contiguous(), counts.contiguous(), *pack(filter), aggr, precision
    )[0]


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """Forward ("add" and "max"), "mean" backward and "max" backward at production shape, each
    with its :func:`gpu_launch`, for the two-linear filter (GN's interactions, SiLU), the
    one-linear filter (neighbour embedding) and the table (rate > 0, no lower cutoff)."""
    base = dict(RATE=False, ZERO_OUTSIDE=False, HAS_LOWER=False, RBF=0, ACT=0, PRECISION="ieee",
                BR=max(16, triton.next_power_of_2(num_rbf)), BF=triton.next_power_of_2(channels), KC=HIDDEN_CHUNK)
    filters = {
        "two": dict(base, TABLE=False, TWO=True),
        "one": dict(base, TABLE=False, TWO=False),
        "table": dict(base, TABLE=True, TWO=False, RATE=True, ZERO_OUTSIDE=True, BR=16),
    }
    pointers = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    with_arg = {**pointers, "arg_ptr": "*i32"}
    cases = []
    for kind, meta in filters.items():
        for fn, aggr, ints, backward in ((_forward_kernel, 0, with_arg, False), (_forward_kernel, 2, with_arg, False),
                                         (_backward_kernel, 1, pointers, True), (_max_backward_kernel, None, with_arg, True)):
            launch = gpu_launch(kind, backward, meta["BF"])
            constexprs = dict(meta, ROWS=launch.tile[0], SLOTS=launch.tile[1], **({} if aggr is None else {"AGGR": aggr}))
            cases.append(CompileCase(fn, constexprs, ints, FLOAT_ARGS, launch.num_warps, launch.num_stages))
    return cases
