"""The fused per-atom update kernels against the reference TensorNet arithmetic, forward and
backward, under the Triton interpreter."""

import pytest
import torch

from fastnnp.kernels.tensornet import interaction_update
from fastnnp.kernels.tensornet.interaction_update import message_products, residual_update
from fastnnp.models.tensornet.cartesian import (
    channel_matmul,
    compose,
    decompose,
    six_to_symmetric,
    skew,
    skew_to_vector,
    squared_norm,
    symmetric_to_six,
)
from fastnnp.models.tensornet.reference import COMPONENT_GROUP

TOL = dict(rtol=1e-4, atol=1e-5)


def _tensor(components):
    return compose(components[:, 0], skew(components[:, 1:4]), six_to_symmetric(components[:, 4:]))


def _components(tensor):
    scalar, antisym, sym = decompose(tensor)
    return torch.cat((scalar[:, None], skew_to_vector(antisym), symmetric_to_six(sym)), dim=1)


def _reference_products(messages, features, self_loop, charge, group):
    m = messages + self_loop[COMPONENT_GROUP] * features
    msg, y = _tensor(m), _tensor(features)
    c = charge[:, None, None, None]
    C = c * (channel_matmul(msg, y) + channel_matmul(y, msg)) if group == "O(3)" else 2 * channel_matmul(y, msg)
    return _components(C) / (squared_norm(C) + 1)[:, None, :]


@pytest.fixture(params=[(4, 32), (64, 32)], ids=["gpu-block", "interpreter-block"])
def block(request, monkeypatch):
    monkeypatch.setattr(interaction_update, "INTERPRETER_BLOCK_ATOMS", request.param[0])
    monkeypatch.setattr(interaction_update, "BLOCK_CHANNELS", request.param[1])


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
    ref = _reference_products(*leaves64, self_loop.double(), charge.double(), group)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    for got, expected in zip(torch.autograd.grad(out, leaves, grad.float()), torch.autograd.grad(ref, leaves64, grad)):
        torch.testing.assert_close(got.double(), expected, **TOL)


@pytest.mark.parametrize("n,F", [(7, 16), (13, 40)])
def test_residual_update_matches_reference(block, n, F):
    X, components, _, charge = _inputs(n, F)
    X = torch.randn(n, 3, 3, F)
    leaves = [X.clone().requires_grad_(), components.clone().requires_grad_()]
    out = residual_update(*leaves, charge)
    X64, comp64 = X.double().requires_grad_(), components.double().requires_grad_()
    dX = _tensor(comp64)
    ref = X64 + dX + charge.double()[:, None, None, None] * channel_matmul(dX, dX)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    for got, expected in zip(torch.autograd.grad(out, leaves, grad.float()), torch.autograd.grad(ref, [X64, comp64], grad)):
        torch.testing.assert_close(got.double(), expected, **TOL)
