"""TensorNet's bias-free channel-mixing linears on per-atom components, as one grouped GEMM.

``channel_mix(X, W, W_t) -> Y`` [N, 10, F]: ``Y[n, c] = X[n, c] @ W[g(c)]^T`` with g the
component's part (0 for I, 1 for the three A entries, 2 for the six S entries) and ``W``
[3, F, F] the three ``nn.Linear`` weights (out, in) stacked, ``W_t`` their transposes. Linear
maps commute with the components (they act on channels only), so this is the reference's
``linears_tensor`` on the 3x3 parts. The backward is the same kernel with ``W_t``: one GEMM,
no per-part slices or copies in torch. Weights are constants for autograd.

One program computes a [BM atoms, BN channels] tile of one component, accumulating ``tl.dot``
over the input channels in BK slices (exact float32, ``input_precision="ieee"``).
"""

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common.compile_case import CompileCase
from ..common.interpreter import interpreting
from .atom_blocks import check_float32

# GPU tile (atoms x output channels x input-channel slice), warps and pipeline stages, chosen
# from ptxas at F=128 on sm_90 (80 registers, no spills, 37.5 % occupancy; 64 x 64 x 32 with
# 4 warps and 3 stages: 202 registers, 12.5 %). The interpreter takes whole widths.
GPU_TILE = (64, 64, 16)
GPU_WARPS, GPU_STAGES = 8, 2
INTERPRETER_TILE = (64, 128, 128)


def _launch_options(F: int) -> dict:
    if interpreting():
        bm, bn, bk = INTERPRETER_TILE
        width = max(16, triton.next_power_of_2(F))
        return dict(BM=bm, BN=min(bn, width), BK=min(bk, width))
    bm, bn, bk = GPU_TILE
    return dict(BM=bm, BN=bn, BK=bk, num_warps=GPU_WARPS, num_stages=GPU_STAGES)


@triton.jit
def _channel_mix_kernel(x_ptr, w_ptr, out_ptr, n_atoms, F, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    c = tl.program_id(1)
    part = (c > 0).to(tl.int32) + (c > 3).to(tl.int32)
    atoms = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    cols = tl.program_id(2) * BN + tl.arange(0, BN)
    rows = atoms[:, None] * (10 * F) + c * F
    atom_mask = atoms[:, None] < n_atoms
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, F, BK):
        ks = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rows + ks[None, :], mask=atom_mask & (ks[None, :] < F), other=0.0)
        # W[part][j, k] as a [BK, BN] tile (k rows, j columns)
        w = tl.load(w_ptr + part * F * F + cols[None, :] * F + ks[:, None],
                    mask=(ks[:, None] < F) & (cols[None, :] < F), other=0.0)
        acc += tl.dot(x, w, input_precision="ieee")
    tl.store(out_ptr + rows + cols[None, :], acc, mask=atom_mask & (cols[None, :] < F))


@torch.library.custom_op("fastnnp::channel_mix", mutates_args=())
def _channel_mix_op(x: Tensor, weights: Tensor, weights_t: Tensor) -> Tensor:
    n_atoms, _, F = x.shape
    out = torch.empty_like(x)
    options = _launch_options(F)
    grid = (triton.cdiv(n_atoms, options["BM"]), 10, triton.cdiv(F, options["BN"]))
    _channel_mix_kernel[grid](x, weights, out, n_atoms, F, **options)
    return out


@_channel_mix_op.register_fake
def _(x, weights, weights_t):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    _, weights, weights_t = inputs
    ctx.save_for_backward(weights, weights_t)


def _grad(ctx, grad):
    weights, weights_t = ctx.saved_tensors
    return _channel_mix_op(grad.contiguous(), weights_t, weights), None, None


_channel_mix_op.register_autograd(_grad, setup_context=_setup)


class MixWeights(NamedTuple):
    """The constants of :func:`channel_mix`: three ``nn.Linear`` weights [F, F] stacked as
    ``weights`` [3, F, F] (out, in) and their transposes ``weights_t``."""

    weights: Tensor
    weights_t: Tensor


def mix_weights(linears) -> MixWeights:
    """:class:`MixWeights` of three bias-free ``nn.Linear`` (I, A, S), detached."""
    weights = torch.stack([linear.weight.detach() for linear in linears])
    return MixWeights(weights.contiguous(), weights.transpose(1, 2).contiguous())


def channel_mix(x: Tensor, weights: MixWeights) -> Tensor:
    """``x`` [N, 10, F] components with each part's channels mixed by its linear (module
    docstring); differentiable in ``x``; the registered op ``torch.ops.fastnnp.channel_mix``."""
    check_float32("channel_mix", x, weights.weights)
    return _channel_mix_op(x.contiguous(), weights.weights, weights.weights_t)


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """The grouped GEMM at the GPU tile (:mod:`fastnnp.kernels.compile_check`)."""
    bm, bn, bk = GPU_TILE
    return [CompileCase(_channel_mix_kernel, dict(BM=bm, BN=bn, BK=bk), num_warps=GPU_WARPS, num_stages=GPU_STAGES)]
