"""The grouped channel-mixing GEMM against the reference linears, forward and backward, under
the interpreter, at a GPU-like multi-tile shape and the interpreter's whole-width tile."""

import copy

import pytest
import torch
from torch import nn

from fastnnp.kernels.tensornet import channel_mix as channel_mix_module
from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.channel_mix import channel_mix, mix_weights

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(params=["small-tiles", "interpreter-tile"])
def tile(request, monkeypatch):
    """Small tiles make several atom, channel and input-slice tiles (with masked edges)."""
    if request.param == "small-tiles":
        monkeypatch.setattr(channel_mix_module, "INTERPRETER_TILE", (16, 16, 16))


@pytest.mark.parametrize("n,F", [(7, 16), (70, 40)])
def test_channel_mix_matches_reference(tile, n, F):
    linears = [nn.Linear(F, F, bias=False).requires_grad_(False) for _ in range(3)]
    linears64 = [copy.deepcopy(linear).double() for linear in linears]
    x = torch.randn(n, 10, F, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    out = channel_mix(x, mix_weights(linears))
    ref = reference.channel_mix(x64, linears64)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    (got,) = torch.autograd.grad(out, x, grad.float())
    (expected,) = torch.autograd.grad(ref, x64, grad)
    torch.testing.assert_close(got.double(), expected, **TOL)


def test_channel_mix_refuses_float64():
    linears = [nn.Linear(8, 8, bias=False).double() for _ in range(3)]
    with pytest.raises(ValueError, match="float32 only"):
        channel_mix(torch.randn(2, 10, 8, dtype=torch.float64), mix_weights(linears))


def test_gpu_launch_matches_compile_case(monkeypatch):
    """What the GPU launches is what the resource report compiled."""
    monkeypatch.setattr(channel_mix_module, "interpreting", lambda: False)
    (case,) = channel_mix_module.compile_cases(128, 32)
    options = channel_mix_module._launch_options(128)
    assert options == dict(**case.constexprs, num_warps=case.num_warps, num_stages=case.num_stages)
