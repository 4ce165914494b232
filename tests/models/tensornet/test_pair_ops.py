"""The pair message-passing ops against plain index_add arithmetic, with all derivatives."""

import pytest
import torch

from fastnnp.models.tensornet import pair_ops
from fastnnp.models.tensornet.pair_ops import contract, spread

SIZES = (1, 3, 2)
GROUP = torch.tensor([0, 1, 1, 1, 2, 2])


@pytest.fixture
def graph(monkeypatch):
    monkeypatch.setattr(pair_ops, "CHUNK", 3)
    torch.manual_seed(0)
    n_atoms, n_pairs = 6, 10
    first = torch.randint(0, n_atoms, (n_pairs,))
    second = torch.randint(0, n_atoms, (n_pairs,))
    return n_atoms, first, second


def _spread_reference(weights, features, first, second):
    w = weights[:, GROUP]
    return torch.zeros_like(features).index_add(0, first, w * features[second]).index_add(0, second, w * features[first])


def test_spread_matches_index_add(graph):
    n_atoms, first, second = graph
    weights = torch.randn(len(first), 3, 4, dtype=torch.float64)
    features = torch.randn(n_atoms, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(spread(weights, features, first, second, SIZES), _spread_reference(weights, features, first, second))


def test_contract_matches_products(graph):
    n_atoms, first, second = graph
    grad = torch.randn(n_atoms, 6, 4, dtype=torch.float64)
    features = torch.randn(n_atoms, 6, 4, dtype=torch.float64)
    products = grad[first] * features[second] + grad[second] * features[first]
    expected = torch.stack([products[:, GROUP == k].sum(1) for k in range(3)], dim=1)
    torch.testing.assert_close(contract(grad, features, first, second, SIZES), expected)


@pytest.mark.parametrize("op", ["spread", "contract"])
def test_first_and_second_derivatives(graph, op):
    n_atoms, first, second = graph
    a = torch.randn(len(first), 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(n_atoms, 6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n_atoms, 6, 4, dtype=torch.float64, requires_grad=True)
    if op == "spread":
        fn, inputs = (lambda w, x: spread(w, x, first, second, SIZES)), (a, t)
    else:
        fn, inputs = (lambda y, x: contract(y, x, first, second, SIZES)), (g, t)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_fused_backward_equals_the_composed_one(graph):
    """Without create_graph, spread's backward is one fused pass; with it, contract and spread."""
    n_atoms, first, second = graph
    a = torch.randn(len(first), 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n_atoms, 6, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(n_atoms, 6, 4, dtype=torch.float64)
    fused = torch.autograd.grad(spread(a, t, first, second, SIZES), (a, t), g)
    composed = torch.autograd.grad(spread(a, t, first, second, SIZES), (a, t), g, create_graph=True)
    for x, y in zip(fused, composed, strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=1e-12, atol=1e-12)
    w = a.detach()
    products = g[first] * t[second] + g[second] * t[first]
    expected_w = torch.stack([products[:, GROUP == k].sum(1) for k in range(3)], dim=1)
    torch.testing.assert_close(fused[0], expected_w.detach())
    torch.testing.assert_close(fused[1], _spread_reference(w, g, first, second))
