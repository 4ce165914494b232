"""TensorNet2 interaction messages: distance, the charge-dependent radial filter and aggregation, fused.

For receiver i and its neighbours j in a :class:`~fastnnp.neighbors.table.NeighborTable` (row
i, slots k < counts[i]), with edge vector v_ik [3], d = |v_ik| and the layer's per-atom charge
terms ``recv``, ``send`` [N, F] (the first linear's charge columns applied to the charges):

    z1_ik = W1 rbf(d) + b1 + recv[i] + send[j]                                  [F]
    filter_ik = act(W3 act(W2 act(z1_ik) + b2) + b3) * cutoff(d)                [3, F]
    messages[i, c, f] = sum_k filter_ik[group[c], f] * features[j_ik, c, f]      [N, 10, F]

TensorNet's radial-MLP kernel (:mod:`fastnnp.kernels.tensornet.interaction_messages`, whose
``@triton.jit`` helpers this module reuses) with the two per-atom terms added before the first
activation. The filter depends on more than the distance, so there is no radial-table form:
the MLP runs per directed edge, in ``tl.dot`` tiles, and nothing per edge is written.

Backward (forces; parameters frozen), in two kernels:

* the features' gradient: filter_ik is not symmetric in the pair's ends, so TensorNet's "same
  neighbour sum applied to the incoming gradient" needs the other direction's filter. It is the
  forward kernel itself with ``recv`` and ``send`` swapped, on the incoming gradient:
  grad_features[j] = sum_{i in N(j)} filter(d, recv[i], send[j]) grad[i], the table listing
  both directions of every pair at the same length;
* ``_backward_kernel``: per edge, backpropagate sum_c grad[i, c] features[j, c] through the
  MLP (recomputed) to d loss / d z1_ik [F]; its sum over the row's slots is recv's gradient
  (a register reduction), its scatter to the senders send's gradient (fp32 atomics, [F] per
  edge); through the basis and the cutoff it gives the edge vector's gradient.
"""

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
    gpu_tile_constexprs,
    program_rows,
    row_sum,
    store_vector_gradient,
    tile_shape,
)
from ..common.op_args import pack, unpack
from ..tensornet.components import store_all_rows, zero_rows
from ..tensornet.interaction_messages import (
    RadialMLP,
    _first_layer,
    _gather,
    _group_product,
    _hidden_chunk,
    _last_layer,
    _tensor_sums,
    _third_weights,
    _vector_sums,
)
from ..tensornet.mlp_tiles import interaction_launch, split_launch


@triton.jit
def _atom_rows(ptr, atom, F, valid, BF: tl.constexpr):
    """Rows ``atom`` [M] of the per-atom [N, F] array at ``ptr``, as [M, BF] (0 where not ``valid``)."""
    f = tl.arange(0, BF)
    return tl.load(ptr + atom[:, None] * F + f[None, :], mask=valid[:, None] & (f[None, :] < F), other=0.0)


@triton.jit
def _charged_first_layer(d, row, sender, valid, recv_ptr, send_ptr, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F, alpha,
                         lower, upper, RBF: tl.constexpr, ACT: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr,
                         PRECISION: tl.constexpr):
    """Radial basis (values, slopes) [M, BR] and the first layer's pre-activation z1 and output
    [M, BF], z1 = W1 rbf + b1 + recv[row] + send[sender]."""
    _, rbf_slope, z1, _ = _first_layer(d, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F, alpha, lower, upper, RBF, ACT, BR, BF,
                                       PRECISION)
    z1 += _atom_rows(recv_ptr, row, F, valid, BF) + _atom_rows(send_ptr, sender, F, valid, BF)
    return rbf_slope, z1, activation(z1, ACT)


@triton.jit
def _forward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, recv_ptr, send_ptr, out_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, ACT: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = zero_rows(ROWS, BF)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        _, _, h1 = _charged_first_layer(d, row, sender, valid, recv_ptr, send_ptr, p0_ptr, p1_ptr, w1_ptr, b1_ptr, R, F,
                                        alpha, lower, upper, RBF, ACT, BR, BF, PRECISION)
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
def _backward_kernel(
    vec_ptr, nbr_ptr, counts_ptr, feat_ptr, recv_ptr, send_ptr, grad_ptr, grad_vec_ptr, grad_recv_ptr, grad_send_ptr,
    p0_ptr, p1_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
    n_rows, K, R, F, alpha, lower, upper,
    RBF: tl.constexpr, ACT: tl.constexpr, HAS_LOWER: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, SLOTS: tl.constexpr, BR: tl.constexpr, BF: tl.constexpr, KC: tl.constexpr,
):
    row0, max_count = program_rows(counts_ptr, n_rows, ROWS)
    f = tl.arange(0, BF)
    r = tl.arange(0, BR)
    w1 = tl.load(w1_ptr + f[:, None] * R + r[None, :], mask=(f[:, None] < F) & (r[None, :] < R), other=0.0)
    g_recv = tl.zeros((ROWS, BF), tl.float32)
    for slot0 in range(0, max_count, SLOTS):
        row, sender, valid, edge, vx, vy, vz, d = edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS, SLOTS)
        rbf_slope, z1, h1 = _charged_first_layer(d, row, sender, valid, recv_ptr, send_ptr, p0_ptr, p1_ptr, w1_ptr,
                                                 b1_ptr, R, F, alpha, lower, upper, RBF, ACT, BR, BF, PRECISION)
        z3a, z3b, z3c = _last_layer(h1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, F, ACT, ROWS * SLOTS, BF, KC, PRECISION)
        cut, cut_slope = cosine_cutoff(d, lower, upper, HAS_LOWER)
        # Per group: d loss / d filter = sum_c grad[i, c] features[j, c], then the last layer's pre-activation.
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 0, 1, F, valid, BF)
        g_cut = tl.sum(g_filter * activation(z3a, ACT), axis=1)
        g_z3a = g_filter * cut[:, None] * activation_grad(z3a, ACT)
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 1, 4, F, valid, BF)
        g_cut += tl.sum(g_filter * activation(z3b, ACT), axis=1)
        g_z3b = g_filter * cut[:, None] * activation_grad(z3b, ACT)
        g_filter = _group_product(grad_ptr, feat_ptr, row, sender, 4, 10, F, valid, BF)
        g_cut += tl.sum(g_filter * activation(z3c, ACT), axis=1)
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
        g_z1 = g_h1 * activation_grad(z1, ACT)
        # z1's gradient: summed over the row's slots for recv, scattered to the senders for send.
        g_recv += row_sum(g_z1, ROWS, SLOTS, BF)
        tl.atomic_add(grad_send_ptr + sender[:, None] * F + f[None, :], g_z1, mask=valid[:, None] & (f[None, :] < F))
        g_rbf = tl.dot(g_z1, w1, input_precision=PRECISION)
        g_d = tl.sum(g_rbf * rbf_slope, axis=1) + g_cut * cut_slope
        store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d)
    rows = (row0 + tl.arange(0, ROWS)).to(tl.int64)
    tl.store(grad_recv_ptr + rows[:, None] * F + f[None, :], g_recv, mask=(rows[:, None] < n_rows) & (f[None, :] < F))


def launch_options(backward: bool, block_f: int) -> dict:
    """KC and launch options for BF = ``block_f``: the forward as TensorNet's interaction forward
    (:func:`~fastnnp.kernels.tensornet.mlp_tiles.interaction_launch`); the backward, which keeps
    no per-component sums, KC 16, 16 warps, 2 stages (sm_90, ptxas: F=64 128 registers, 48 B
    spilled, 25 % occupancy; F=128 128 registers, 224 B, 25 %; TensorNet's backward launch, KC
    32, 4 warps, 3 stages, spills 1380 B / 4520 B here at 12.5 % / 6.2 %; not yet timed on a GPU).
    The interpreter ignores warps and stages."""
    if backward:
        return dict(KC=16, num_warps=16, num_stages=2)
    return interaction_launch(False, block_f)


def _launch(radial: RadialMLP, neighbors: Tensor, precision: str, backward: bool):
    """(kernel, grid, parameter arguments, scalar arguments, meta) of the forward or backward kernel."""
    n_rows, K = neighbors.shape
    F, R = radial.w1.shape
    rows, slots = tile_shape()
    weights = (radial.p0, radial.p1, radial.w1, radial.b1, radial.w2, radial.b2, radial.w3, radial.b3)
    scalars = (n_rows, K, R, F, radial.alpha, radial.cutoff_lower, radial.cutoff_upper)
    BF = max(16, triton.next_power_of_2(F))
    meta = dict(
        RBF=radial.rbf_code, ACT=radial.activation_code, HAS_LOWER=radial.cutoff_lower > 0, PRECISION=precision,
        ROWS=rows, SLOTS=slots, BR=max(16, triton.next_power_of_2(R)), BF=BF, **launch_options(backward, BF),
    )
    kernel = _backward_kernel if backward else _forward_kernel
    return kernel, (triton.cdiv(n_rows, rows),), weights, scalars, meta


@torch.library.custom_op("fastnnp::tensornet2_messages", mutates_args=())
def _messages_op(
    vec: Tensor, features: Tensor, recv: Tensor, send: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> Tensor:
    """Forward kernel; the filter packed by :func:`~fastnnp.kernels.common.op_args.pack`."""
    out = torch.empty_like(features)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, False)
    kernel[grid](vec, neighbors, counts, features, recv, send, out, *weights, *scalars, **meta)
    return out


@_messages_op.register_fake
def _(vec, features, recv, send, neighbors, counts, kind, tensors, floats, ints, precision):
    return torch.empty_like(features)


@torch.library.custom_op("fastnnp::tensornet2_messages_backward", mutates_args=())
def _messages_backward_op(
    grad: Tensor, vec: Tensor, features: Tensor, recv: Tensor, send: Tensor, neighbors: Tensor, counts: Tensor,
    kind: str, tensors: list[Tensor], floats: list[float], ints: list[int], precision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward kernel: the gradients of the edge vectors, of ``recv`` and of ``send``."""
    grad_vec = torch.zeros_like(vec)
    grad_recv = torch.empty_like(recv)
    grad_send = torch.zeros_like(send)
    kernel, grid, weights, scalars, meta = _launch(unpack(kind, tensors, floats, ints), neighbors, precision, True)
    kernel[grid](
        vec, neighbors, counts, features, recv, send, grad, grad_vec, grad_recv, grad_send, *weights, *scalars, **meta
    )
    return grad_vec, grad_recv, grad_send


@_messages_backward_op.register_fake
def _(grad, vec, features, recv, send, neighbors, counts, kind, tensors, floats, ints, precision):
    return torch.empty_like(vec), torch.empty_like(recv), torch.empty_like(send)


def _setup_context(ctx, inputs, output):
    vec, features, recv, send, neighbors, counts, kind, tensors, floats, ints, precision = inputs
    ctx.save_for_backward(vec, features, recv, send, neighbors, counts, *tensors)
    ctx.filter_args = (kind, floats, ints, precision)


def _backward(ctx, grad):
    vec, features, recv, send, neighbors, counts, *tensors = ctx.saved_tensors
    kind, floats, ints, precision = ctx.filter_args
    grad = grad.contiguous()
    # the other direction's filters on the incoming gradient: recv and send swap roles
    grad_features = _messages_op(vec, grad, send, recv, neighbors, counts, kind, tensors, floats, ints, precision)
    grad_vec, grad_recv, grad_send = _messages_backward_op(
        grad, vec, features, recv, send, neighbors, counts, kind, tensors, floats, ints, precision
    )
    return grad_vec, grad_features, grad_recv, grad_send, None, None, None, [None] * len(tensors), None, None, None


_messages_op.register_autograd(_backward, setup_context=_setup_context)


def charged_messages(
    vec: Tensor, features: Tensor, recv: Tensor, send: Tensor, neighbors: Tensor, counts: Tensor, radial: RadialMLP,
    precision: str = "ieee",
) -> Tensor:
    """Filtered neighbour sums [N, 10, F] of ``features`` [N, 10, F] (I, A vector, S six).

    ``vec`` [N, K, 3] edge vectors of the table rows ``neighbors`` [N, K] (int32) with
    ``counts`` [N] valid slots; ``recv``, ``send`` [N, F] the per-atom terms the receiver and
    the sender add to the first layer's pre-activation; ``radial`` the layer's MLP with ``w1``
    the first linear's basis columns [F, R]. float32, on one device. ``precision``: the
    ``tl.dot`` input precision, "ieee" or "tf32". Differentiable in ``vec``, ``features``,
    ``recv`` and ``send`` (the MLP's parameters are constants); the registered op
    ``torch.ops.fastnnp.tensornet2_messages``.
    """
    return _messages_op(
        vec.contiguous(), features.contiguous(), recv.contiguous(), send.contiguous(), neighbors.contiguous(),
        counts.contiguous(), *pack(radial), precision,
    )


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """Forward and backward at production shape (:mod:`fastnnp.kernels.compile_check`), each
    with its launch's KC, warps and stages (:func:`launch_options`)."""
    base = dict(RBF=0, ACT=0, HAS_LOWER=False, PRECISION="ieee", **gpu_tile_constexprs(channels, num_rbf))
    table = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    cases = []
    for fn, backward in ((_forward_kernel, False), (_backward_kernel, True)):
        chunk, warps, stages = split_launch(launch_options(backward, base["BF"]))
        cases.append(CompileCase(fn, {**base, **chunk}, table, FLOAT_SCALARS, warps, stages))
    return cases
