"""The fused per-atom update kernels against their torch references (the reference TensorNet's
steps), forward and backward, under the Triton interpreter."""

import pytest
import torch

from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.interaction_update import message_products, residual_update

TOL = dict(rtol=1e-4, atol=1e-5)


def _inputs(n, F):
    torch.manual_seed(1)
    return (torch.randn(n, 10, F), torch.randn(n, 10, F), torch.randn(3, F), 1 + 0.1 * torch.randn(n))


@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
@pytest.mark.parametrize("n,F", [(7, 16), (13, 40)])
def test_message_products_match_reference(block, group, n, F):
    messages, features, self_loop, charge = _inputs(n, F)
    leaves = [messages.clone().requires_grad_(), features.clone().requires_grad_()]
    out = message_products(*leaves, self_loop, charge, group)
    leaves64 = [messages.double().requires_grad_(), features.double().requires_grad_()]
    ref = reference.message_products(*leaves64, self_loop.double(), charge.double(), group)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    for got, expected in zip(torch.autograd.grad(out, leaves, grad.float()), torch.autograd.grad(ref, leaves64, grad), strict=True):
        torch.testing.assert_close(got.double(), expected, **TOL)


@pytest.mark.parametrize("n,F", [(7, 16), (13, 40)])
def test_residual_update_matches_reference(block, n, F):
    X, components, _, charge = _inputs(n, F)
    leaves = [X.clone().requires_grad_(), components.clone().requires_grad_()]
    out = residual_update(*leaves, charge)
    X64, comp64 = X.double().requires_grad_(), components.double().requires_grad_()
    ref = reference.residual_update(X64, comp64, charge.double())
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    for got, expected in zip(torch.autograd.grad(out, leaves, grad.float()), torch.autograd.grad(ref, [X64, comp64], grad), strict=True):
        torch.testing.assert_close(got.double(), expected, **TOL)
