"""TensorNet's per-atom update around an interaction's channel-mixing GEMMs, fused.

Two elementwise ops over (atom, channel), each one pass over memory forward and one backward:

``message_products(M, T, L, c, group) -> P`` [N, 10, F]
    m = M + L[component group] * T (the summed messages plus the self loop's),
    msg and Y = the 3x3 tensors of m and T, C = c (msg Y + Y msg) for O(3) or 2 Y msg for
    SO(3), P = decompose(C) / (|C|^2 + 1).
``residual_update(X, D, c) -> X + dX + c dX dX`` [N, 10, F], with X, dX the tensors of the
    components X, D and the result decomposed again.

Between them the caller applies the three bias-free channel-mixing linears to the components
of P (:mod:`~fastnnp.kernels.tensornet.channel_mix`). ``c`` [N] is the charge factor 1 + 0.1 q; the self-loop filter L [3, F] and the
charge factor are constants for autograd.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.op_args import constant
from .atom_blocks import atom_block, atom_launch, gpu_blocks
from .components import (
    compose,
    compose_t,
    decompose,
    decompose_t,
    load_components,
    matmul,
    squared_norm,
    store_components,
)

@triton.jit
def _messages_with_self_loop(m_ptr, t_ptr, loop_ptr, offsets, channels, mask, F):
    """m = M + L[group] * T (ten components) and T."""
    m0, m1, m2, m3, m4, m5, m6, m7, m8, m9 = load_components(m_ptr, offsets, mask, F)
    t0, t1, t2, t3, t4, t5, t6, t7, t8, t9 = load_components(t_ptr, offsets, mask, F)
    cmask = channels < F
    l0 = tl.load(loop_ptr + channels, mask=cmask, other=0.0)[None, :]
    l1 = tl.load(loop_ptr + F + channels, mask=cmask, other=0.0)[None, :]
    l2 = tl.load(loop_ptr + 2 * F + channels, mask=cmask, other=0.0)[None, :]
    m = (m0 + l0 * t0, m1 + l1 * t1, m2 + l1 * t2, m3 + l1 * t3, m4 + l2 * t4, m5 + l2 * t5,
         m6 + l2 * t6, m7 + l2 * t7, m8 + l2 * t8, m9 + l2 * t9)
    return m, (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9), (l0, l1, l2)


@triton.jit
def _products(msg, y, c, O3: tl.constexpr):
    """C = c (msg Y + Y msg) for O(3), 2 Y msg for SO(3) (nine entries)."""
    if O3:
        p = matmul(*msg, *y)
        q = matmul(*y, *msg)
        out = (c * (p[0] + q[0]), c * (p[1] + q[1]), c * (p[2] + q[2]), c * (p[3] + q[3]), c * (p[4] + q[4]),
               c * (p[5] + q[5]), c * (p[6] + q[6]), c * (p[7] + q[7]), c * (p[8] + q[8]))
    else:
        p = matmul(*y, *msg)
        out = (2.0 * p[0], 2.0 * p[1], 2.0 * p[2], 2.0 * p[3], 2.0 * p[4], 2.0 * p[5], 2.0 * p[6], 2.0 * p[7],
               2.0 * p[8])
    return out


@triton.jit
def _transpose(x00, x01, x02, x10, x11, x12, x20, x21, x22):
    return x00, x10, x20, x01, x11, x21, x02, x12, x22


@triton.jit
def _products_forward(m_ptr, t_ptr, loop_ptr, c_ptr, out_ptr, n_atoms, F,
                      O3: tl.constexpr, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    c = tl.load(c_ptr + atoms, mask=atoms < n_atoms, other=1.0)[:, None]
    m, t, _ = _messages_with_self_loop(m_ptr, t_ptr, loop_ptr, offsets, channels, mask, F)
    C = _products(compose(*m), compose(*t), c, O3)
    inv = 1.0 / (squared_norm(*C) + 1.0)
    q = decompose(*C)
    store_components(out_ptr, offsets, mask, F, q[0] * inv, q[1] * inv, q[2] * inv, q[3] * inv, q[4] * inv,
                     q[5] * inv, q[6] * inv, q[7] * inv, q[8] * inv, q[9] * inv)


@triton.jit
def _products_backward(m_ptr, t_ptr, loop_ptr, c_ptr, grad_ptr, grad_m_ptr, grad_t_ptr, n_atoms, F,
                       O3: tl.constexpr, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    c = tl.load(c_ptr + atoms, mask=atoms < n_atoms, other=1.0)[:, None]
    m, t, loop = _messages_with_self_loop(m_ptr, t_ptr, loop_ptr, offsets, channels, mask, F)
    msg = compose(*m)
    y = compose(*t)
    C = _products(msg, y, c, O3)
    inv = 1.0 / (squared_norm(*C) + 1.0)
    q = decompose(*C)
    g = load_components(grad_ptr, offsets, mask, F)
    # P = q * inv: through the normalisation and the decomposition to C.
    g_inv = (g[0] * q[0] + g[1] * q[1] + g[2] * q[2] + g[3] * q[3] + g[4] * q[4] + g[5] * q[5] + g[6] * q[6]
             + g[7] * q[7] + g[8] * q[8] + g[9] * q[9])
    g_norm2 = -g_inv * inv * inv
    gq = decompose_t(g[0] * inv, g[1] * inv, g[2] * inv, g[3] * inv, g[4] * inv, g[5] * inv, g[6] * inv,
                     g[7] * inv, g[8] * inv, g[9] * inv)
    gC = (gq[0] + 2.0 * g_norm2 * C[0], gq[1] + 2.0 * g_norm2 * C[1], gq[2] + 2.0 * g_norm2 * C[2],
          gq[3] + 2.0 * g_norm2 * C[3], gq[4] + 2.0 * g_norm2 * C[4], gq[5] + 2.0 * g_norm2 * C[5],
          gq[6] + 2.0 * g_norm2 * C[6], gq[7] + 2.0 * g_norm2 * C[7], gq[8] + 2.0 * g_norm2 * C[8])
    # Through the products to msg and Y.
    y_t = _transpose(*y)
    msg_t = _transpose(*msg)
    if O3:
        a = matmul(*gC, *y_t)
        b = matmul(*y_t, *gC)
        g_msg = (c * (a[0] + b[0]), c * (a[1] + b[1]), c * (a[2] + b[2]), c * (a[3] + b[3]), c * (a[4] + b[4]),
                 c * (a[5] + b[5]), c * (a[6] + b[6]), c * (a[7] + b[7]), c * (a[8] + b[8]))
        a = matmul(*msg_t, *gC)
        b = matmul(*gC, *msg_t)
        g_y = (c * (a[0] + b[0]), c * (a[1] + b[1]), c * (a[2] + b[2]), c * (a[3] + b[3]), c * (a[4] + b[4]),
               c * (a[5] + b[5]), c * (a[6] + b[6]), c * (a[7] + b[7]), c * (a[8] + b[8]))
    else:
        a = matmul(*y_t, *gC)
        g_msg = (2.0 * a[0], 2.0 * a[1], 2.0 * a[2], 2.0 * a[3], 2.0 * a[4], 2.0 * a[5], 2.0 * a[6], 2.0 * a[7],
                 2.0 * a[8])
        a = matmul(*gC, *msg_t)
        g_y = (2.0 * a[0], 2.0 * a[1], 2.0 * a[2], 2.0 * a[3], 2.0 * a[4], 2.0 * a[5], 2.0 * a[6], 2.0 * a[7],
               2.0 * a[8])
    gm = compose_t(*g_msg)
    gt = compose_t(*g_y)
    l0, l1, l2 = loop
    store_components(grad_m_ptr, offsets, mask, F, *gm)
    store_components(
        grad_t_ptr, offsets, mask, F, gt[0] + l0 * gm[0], gt[1] + l1 * gm[1], gt[2] + l1 * gm[2],
        gt[3] + l1 * gm[3], gt[4] + l2 * gm[4], gt[5] + l2 * gm[5], gt[6] + l2 * gm[6], gt[7] + l2 * gm[7],
        gt[8] + l2 * gm[8], gt[9] + l2 * gm[9],
    )


@triton.jit
def _residual_forward(x_ptr, d_ptr, c_ptr, out_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    c = tl.load(c_ptr + atoms, mask=atoms < n_atoms, other=1.0)[:, None]
    d = compose(*load_components(d_ptr, offsets, mask, F))
    x = compose(*load_components(x_ptr, offsets, mask, F))
    dd = matmul(*d, *d)
    store_components(out_ptr, offsets, mask, F, *decompose(
        x[0] + d[0] + c * dd[0], x[1] + d[1] + c * dd[1], x[2] + d[2] + c * dd[2], x[3] + d[3] + c * dd[3],
        x[4] + d[4] + c * dd[4], x[5] + d[5] + c * dd[5], x[6] + d[6] + c * dd[6], x[7] + d[7] + c * dd[7],
        x[8] + d[8] + c * dd[8]))


@triton.jit
def _residual_backward(d_ptr, c_ptr, grad_ptr, grad_x_ptr, grad_d_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    c = tl.load(c_ptr + atoms, mask=atoms < n_atoms, other=1.0)[:, None]
    d_t = _transpose(*compose(*load_components(d_ptr, offsets, mask, F)))
    g = decompose_t(*load_components(grad_ptr, offsets, mask, F))
    a = matmul(*g, *d_t)
    b = matmul(*d_t, *g)
    store_components(grad_x_ptr, offsets, mask, F, *compose_t(*g))
    gd = compose_t(g[0] + c * (a[0] + b[0]), g[1] + c * (a[1] + b[1]), g[2] + c * (a[2] + b[2]),
                   g[3] + c * (a[3] + b[3]), g[4] + c * (a[4] + b[4]), g[5] + c * (a[5] + b[5]),
                   g[6] + c * (a[6] + b[6]), g[7] + c * (a[7] + b[7]), g[8] + c * (a[8] + b[8]))
    store_components(grad_d_ptr, offsets, mask, F, *gd)


@torch.library.custom_op("fastnnp::message_products", mutates_args=())
def _products_op(messages: Tensor, features: Tensor, self_loop: Tensor, charge_factor: Tensor, o3: bool) -> Tensor:
    n_atoms, _, F = messages.shape
    out = torch.empty_like(messages)
    grid, blocks = atom_launch(n_atoms, F)
    _products_forward[grid](messages, features, self_loop, charge_factor, out, n_atoms, F, O3=o3, **blocks)
    return out


@_products_op.register_fake
def _(messages, features, self_loop, charge_factor, o3):
    return torch.empty_like(messages)


@torch.library.custom_op("fastnnp::message_products_backward", mutates_args=())
def _products_backward_op(
    grad: Tensor, messages: Tensor, features: Tensor, self_loop: Tensor, charge_factor: Tensor, o3: bool
) -> tuple[Tensor, Tensor]:
    n_atoms, _, F = messages.shape
    grad_messages, grad_features = torch.empty_like(messages), torch.empty_like(features)
    grid, blocks = atom_launch(n_atoms, F)
    _products_backward[grid](
        messages, features, self_loop, charge_factor, grad.contiguous(), grad_messages, grad_features,
        n_atoms, F, O3=o3, **blocks,
    )
    return grad_messages, grad_features


@_products_backward_op.register_fake
def _(grad, messages, features, self_loop, charge_factor, o3):
    return torch.empty_like(messages), torch.empty_like(features)


def _products_setup(ctx, inputs, output):
    messages, features, self_loop, charge_factor, o3 = inputs
    ctx.save_for_backward(messages, features, self_loop, charge_factor)
    ctx.o3 = o3


def _products_grad(ctx, grad):
    grad_messages, grad_features = _products_backward_op(grad, *ctx.saved_tensors, ctx.o3)
    return grad_messages, grad_features, None, None, None


_products_op.register_autograd(_products_grad, setup_context=_products_setup)


@torch.library.custom_op("fastnnp::residual_update", mutates_args=())
def _residual_op(X: Tensor, components: Tensor, charge_factor: Tensor) -> Tensor:
    n_atoms, _, F = components.shape
    out = torch.empty_like(X)
    grid, blocks = atom_launch(n_atoms, F)
    _residual_forward[grid](X, components, charge_factor, out, n_atoms, F, **blocks)
    return out


@_residual_op.register_fake
def _(X, components, charge_factor):
    return torch.empty_like(X)


@torch.library.custom_op("fastnnp::residual_update_backward", mutates_args=())
def _residual_backward_op(grad: Tensor, components: Tensor, charge_factor: Tensor) -> tuple[Tensor, Tensor]:
    n_atoms, _, F = components.shape
    grad_x, grad_components = torch.empty_like(components), torch.empty_like(components)
    grid, blocks = atom_launch(n_atoms, F)
    _residual_backward[grid](components, charge_factor, grad.contiguous(), grad_x, grad_components, n_atoms, F, **blocks)
    return grad_x, grad_components


@_residual_backward_op.register_fake
def _(grad, components, charge_factor):
    return torch.empty_like(components), torch.empty_like(components)


def _residual_setup(ctx, inputs, output):
    _, components, charge_factor = inputs
    ctx.save_for_backward(components, charge_factor)


def _residual_grad(ctx, grad):
    grad_x, grad_components = _residual_backward_op(grad, *ctx.saved_tensors)
    return grad_x, grad_components, None


_residual_op.register_autograd(_residual_grad, setup_context=_residual_setup)


def message_products(messages: Tensor, features: Tensor, self_loop: Tensor, charge_factor: Tensor, group: str) -> Tensor:
    """Normalised components [N, 10, F] of the O(3)/SO(3) product of messages and features.

    ``messages``, ``features`` [N, 10, F] (I, A vector, S six), ``self_loop`` [3, F] the layer's
    filter at distance 0, ``charge_factor`` [N], ``group`` "O(3)" or "SO(3)"; float32.
    Differentiable in messages and features; the registered op ``torch.ops.fastnnp.message_products``.
    """
    return _products_op(
        messages.contiguous(), features.contiguous(), constant(self_loop),
        constant(charge_factor), group == "O(3)",
    )


def residual_update(X: Tensor, components: Tensor, charge_factor: Tensor) -> Tensor:
    """Components [N, 10, F] of X + dX + c dX dX, with X and dX the tensors of ``X`` and
    ``components`` [N, 10, F] (differentiable in both; the registered op
    ``torch.ops.fastnnp.residual_update``)."""
    return _residual_op(X.contiguous(), components.contiguous(), constant(charge_factor))


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The four kernels at the GPU block (:mod:`fastnnp.kernels.compile_check`)."""
    block = gpu_blocks()
    cases = [CompileCase(fn, dict(O3=True, **block)) for fn in (_products_forward, _products_backward)]
    return cases + [CompileCase(fn, block) for fn in (_residual_forward, _residual_backward)]
