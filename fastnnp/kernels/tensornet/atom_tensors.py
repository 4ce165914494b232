"""TensorNet's remaining atom-local steps on [N, 10, F] components, fused per (atom, channel).

``normalized(X) -> X / (|X|^2 + 1)``
    each interaction's input normalisation (|X|^2 the squared Frobenius norm of the tensor of
    the components, per atom and channel).
``embedding_components(M, t, l) -> (X0, |X0|^2)``
    the embedding's summed messages M [N, 10, F] (I, A vector, outer-product six entries) plus
    the self loop's scalar l t (l [F] the embedding's I filter at distance 0, t [N, F] =
    z_recv + z_send) -> components of X0 = I 1 + skew(A) + traceless(outer) and its squared norm
    [N, F] (the input of the embedding's norm MLP).
``readout_invariants(X) -> [N, 3F]``
    the readout's features (3 I^2 | |A|^2 | |S|^2) of the tensors' decomposition.

Each is one pass over memory forward and one backward; the self-loop filter is a constant
for autograd. Together with :mod:`~fastnnp.kernels.tensornet.channel_mix` and
:mod:`~fastnnp.kernels.tensornet.interaction_update` they replace the torch glue between the
message kernels.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.op_args import constant
from .atom_blocks import atom_block, atom_launch, check_float32, gpu_blocks
from .components import compose, compose_t, decompose, decompose_t, load_components, squared_norm, store_components


@triton.jit
def _normalized_forward(x_ptr, out_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    x = load_components(x_ptr, offsets, mask, F)
    inv = 1.0 / (squared_norm(*compose(*x)) + 1.0)
    store_components(out_ptr, offsets, mask, F, x[0] * inv, x[1] * inv, x[2] * inv, x[3] * inv, x[4] * inv,
                     x[5] * inv, x[6] * inv, x[7] * inv, x[8] * inv, x[9] * inv)


@triton.jit
def _normalized_backward(x_ptr, grad_ptr, grad_x_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    x = load_components(x_ptr, offsets, mask, F)
    e = compose(*x)
    inv = 1.0 / (squared_norm(*e) + 1.0)
    g = load_components(grad_ptr, offsets, mask, F)
    gx = (g[0] * x[0] + g[1] * x[1] + g[2] * x[2] + g[3] * x[3] + g[4] * x[4] + g[5] * x[5] + g[6] * x[6]
          + g[7] * x[7] + g[8] * x[8] + g[9] * x[9])
    # d inv / d e = -2 inv^2 e, taken back to the components by compose's adjoint
    s = -2.0 * gx * inv * inv
    n = compose_t(s * e[0], s * e[1], s * e[2], s * e[3], s * e[4], s * e[5], s * e[6], s * e[7], s * e[8])
    store_components(grad_x_ptr, offsets, mask, F, g[0] * inv + n[0], g[1] * inv + n[1], g[2] * inv + n[2],
                     g[3] * inv + n[3], g[4] * inv + n[4], g[5] * inv + n[5], g[6] * inv + n[6],
                     g[7] * inv + n[7], g[8] * inv + n[8], g[9] * inv + n[9])


@triton.jit
def _embedding_forward(m_ptr, t_ptr, loop_ptr, out_ptr, norm_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    m = load_components(m_ptr, offsets, mask, F)
    t = tl.load(t_ptr + atoms[:, None] * F + channels[None, :], mask=mask, other=0.0)
    loop = tl.load(loop_ptr + channels, mask=channels < F, other=0.0)[None, :]
    trace = (m[4] + m[5] + m[6]) / 3.0
    x = (m[0] + loop * t, m[1], m[2], m[3], m[4] - trace, m[5] - trace, m[6] - trace, m[7], m[8], m[9])
    store_components(out_ptr, offsets, mask, F, *x)
    tl.store(norm_ptr + atoms[:, None] * F + channels[None, :], squared_norm(*compose(*x)), mask=mask)


@triton.jit
def _embedding_backward(m_ptr, t_ptr, loop_ptr, grad_ptr, grad_norm_ptr, grad_m_ptr, n_atoms, F,
                        BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    m = load_components(m_ptr, offsets, mask, F)
    t = tl.load(t_ptr + atoms[:, None] * F + channels[None, :], mask=mask, other=0.0)
    loop = tl.load(loop_ptr + channels, mask=channels < F, other=0.0)[None, :]
    trace = (m[4] + m[5] + m[6]) / 3.0
    e = compose(m[0] + loop * t, m[1], m[2], m[3], m[4] - trace, m[5] - trace, m[6] - trace, m[7], m[8], m[9])
    s = 2.0 * tl.load(grad_norm_ptr + atoms[:, None] * F + channels[None, :], mask=mask, other=0.0)
    n = compose_t(s * e[0], s * e[1], s * e[2], s * e[3], s * e[4], s * e[5], s * e[6], s * e[7], s * e[8])
    g = load_components(grad_ptr, offsets, mask, F)
    g = (g[0] + n[0], g[1] + n[1], g[2] + n[2], g[3] + n[3], g[4] + n[4], g[5] + n[5], g[6] + n[6], g[7] + n[7],
         g[8] + n[8], g[9] + n[9])
    # the trace removal is a symmetric projection of the diagonal triple
    g_trace = (g[4] + g[5] + g[6]) / 3.0
    store_components(grad_m_ptr, offsets, mask, F, g[0], g[1], g[2], g[3], g[4] - g_trace, g[5] - g_trace,
                     g[6] - g_trace, g[7], g[8], g[9])


@triton.jit
def _invariants(q0, q1, q2, q3, q4, q5, q6, q7, q8, q9):
    """(3 I^2, |A|^2, |S|^2) of decomposed components (A = skew(a): |A|^2 = 2 |a|^2)."""
    return (3.0 * q0 * q0, 2.0 * (q1 * q1 + q2 * q2 + q3 * q3),
            q4 * q4 + q5 * q5 + q6 * q6 + 2.0 * (q7 * q7 + q8 * q8 + q9 * q9))


@triton.jit
def _readout_forward(x_ptr, out_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    i, a, s = _invariants(*decompose(*compose(*load_components(x_ptr, offsets, mask, F))))
    out = atoms[:, None] * (3 * F) + channels[None, :]
    tl.store(out_ptr + out, i, mask=mask)
    tl.store(out_ptr + out + F, a, mask=mask)
    tl.store(out_ptr + out + 2 * F, s, mask=mask)


@triton.jit
def _readout_backward(x_ptr, grad_ptr, grad_x_ptr, n_atoms, F, BN: tl.constexpr, BF: tl.constexpr):
    atoms, channels, offsets, mask = atom_block(n_atoms, F, 10 * F, BN, BF)
    q = decompose(*compose(*load_components(x_ptr, offsets, mask, F)))
    out = atoms[:, None] * (3 * F) + channels[None, :]
    gi = 6.0 * tl.load(grad_ptr + out, mask=mask, other=0.0)
    ga = 4.0 * tl.load(grad_ptr + out + F, mask=mask, other=0.0)
    gs = 2.0 * tl.load(grad_ptr + out + 2 * F, mask=mask, other=0.0)
    gq = (gi * q[0], ga * q[1], ga * q[2], ga * q[3], gs * q[4], gs * q[5], gs * q[6], 2.0 * gs * q[7],
          2.0 * gs * q[8], 2.0 * gs * q[9])
    store_components(grad_x_ptr, offsets, mask, F, *compose_t(*decompose_t(*gq)))


def _run(kernel, n_atoms: int, F: int, *args) -> None:
    grid, blocks = atom_launch(n_atoms, F)
    kernel[grid](*args, n_atoms, F, **blocks)


def _one_input_op(name: str, forward, backward, new_output):
    """The registered op ``fastnnp::<name>`` of a per-atom kernel pair on one [N, 10, F] input x
    (``new_output(x)`` allocates its result), with ``fastnnp::<name>_backward`` as its autograd."""

    @torch.library.custom_op(f"fastnnp::{name}", mutates_args=())
    def op(x: Tensor) -> Tensor:
        out = new_output(x)
        _run(forward, x.shape[0], x.shape[2], x, out)
        return out

    @torch.library.custom_op(f"fastnnp::{name}_backward", mutates_args=())
    def backward_op(grad: Tensor, x: Tensor) -> Tensor:
        grad_x = torch.empty_like(x)
        _run(backward, x.shape[0], x.shape[2], x, grad.contiguous(), grad_x)
        return grad_x

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def grad_fn(ctx, grad):
        return backward_op(grad, *ctx.saved_tensors)

    op.register_fake(new_output)
    backward_op.register_fake(lambda grad, x: torch.empty_like(x))
    op.register_autograd(grad_fn, setup_context=setup)
    return op


_normalized_op = _one_input_op("normalized", _normalized_forward, _normalized_backward, torch.empty_like)
_readout_op = _one_input_op(
    "readout_invariants", _readout_forward, _readout_backward, lambda x: x.new_empty(x.shape[0], 3 * x.shape[2])
)


@torch.library.custom_op("fastnnp::embedding_components", mutates_args=())
def _embedding_op(messages: Tensor, type_terms: Tensor, self_loop: Tensor) -> tuple[Tensor, Tensor]:
    n_atoms, _, F = messages.shape
    out, norm = torch.empty_like(messages), messages.new_empty(n_atoms, F)
    _run(_embedding_forward, n_atoms, F, messages, type_terms, self_loop, out, norm)
    return out, norm


@_embedding_op.register_fake
def _(messages, type_terms, self_loop):
    return torch.empty_like(messages), messages.new_empty(messages.shape[0], messages.shape[2])


@torch.library.custom_op("fastnnp::embedding_components_backward", mutates_args=())
def _embedding_backward_op(
    grad: Tensor, grad_norm: Tensor, messages: Tensor, type_terms: Tensor, self_loop: Tensor
) -> Tensor:
    n_atoms, _, F = messages.shape
    grad_messages = torch.empty_like(messages)
    _run(_embedding_backward, n_atoms, F, messages, type_terms, self_loop, grad.contiguous(), grad_norm.contiguous(),
         grad_messages)
    return grad_messages


@_embedding_backward_op.register_fake
def _(grad, grad_norm, messages, type_terms, self_loop):
    return torch.empty_like(messages)


def _embedding_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _embedding_grad(ctx, grad, grad_norm):
    messages, type_terms, self_loop = ctx.saved_tensors
    grad = torch.zeros_like(messages) if grad is None else grad
    grad_norm = torch.zeros_like(type_terms) if grad_norm is None else grad_norm
    grad_messages = _embedding_backward_op(grad, grad_norm, messages, type_terms, self_loop)
    # X0's scalar is M_I + l t, so t's gradient is l times the scalar's (the messages' I gradient)
    grad_terms = grad_messages[:, 0] * self_loop if ctx.needs_input_grad[1] else None
    return grad_messages, grad_terms, None


_embedding_op.register_autograd(_embedding_grad, setup_context=_embedding_setup)


def normalized(x: Tensor) -> Tensor:
    """``x`` [N, 10, F] components divided by (the squared norm of their tensor + 1), per atom
    and channel; the registered op ``torch.ops.fastnnp.normalized``."""
    check_float32("normalized", x)
    return _normalized_op(x.contiguous())


def embedding_components(messages: Tensor, type_terms: Tensor, self_loop: Tensor) -> tuple[Tensor, Tensor]:
    """(components [N, 10, F] of the embedding's first tensor, its squared norm [N, F]) from the
    summed messages [N, 10, F], ``type_terms`` t = z_recv + z_send [N, F] and ``self_loop`` [F]
    the I filter at distance 0 (module docstring); the registered op
    ``torch.ops.fastnnp.embedding_components``."""
    check_float32("embedding_components", messages, type_terms, self_loop)
    return _embedding_op(messages.contiguous(), type_terms.contiguous(), constant(self_loop))


def readout_invariants(x: Tensor) -> Tensor:
    """(3 I^2 | |A|^2 | |S|^2) [N, 3F] of the tensors of ``x`` [N, 10, F]; the registered op
    ``torch.ops.fastnnp.readout_invariants``."""
    check_float32("readout_invariants", x)
    return _readout_op(x.contiguous())


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The six kernels at the GPU block (:mod:`fastnnp.kernels.compile_check`)."""
    kernels = (_normalized_forward, _normalized_backward, _embedding_forward, _embedding_backward,
               _readout_forward, _readout_backward)
    return [CompileCase(fn, gpu_blocks()) for fn in kernels]
