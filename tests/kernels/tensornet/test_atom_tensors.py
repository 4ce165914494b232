"""The per-atom component kernels (normalisation, the embedding's first tensor, the readout's
invariants) against their float64 torch references, forward and backward, under the interpreter."""

import pytest
import torch

from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.atom_tensors import embedding_components, normalized, readout_invariants

TOL = dict(rtol=1e-4, atol=1e-5)
SHAPES = [(7, 16), (13, 40)]


def _check(kernel_fn, reference_fn, inputs, differentiable):
    """Outputs and the gradients of ``differentiable`` inputs (indices) for random cotangents."""
    leaves = [t.clone().requires_grad_(k in differentiable) for k, t in enumerate(inputs)]
    leaves64 = [t.double().requires_grad_(k in differentiable) for k, t in enumerate(inputs)]
    out, ref = kernel_fn(*leaves), reference_fn(*leaves64)
    out, ref = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    grads = [torch.randn_like(r) for r in ref]
    for got, expected in zip(out, ref, strict=True):
        torch.testing.assert_close(got.double(), expected, **TOL)
    wrt = [leaves[k] for k in differentiable]
    wrt64 = [leaves64[k] for k in differentiable]
    got = torch.autograd.grad(out, wrt, [g.float() for g in grads])
    expected = torch.autograd.grad(ref, wrt64, grads)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e, **TOL)


@pytest.mark.parametrize("n,F", SHAPES)
def test_normalized_matches_reference(block, n, F):
    _check(normalized, reference.normalized, [torch.randn(n, 10, F)], {0})


@pytest.mark.parametrize("n,F", SHAPES)
def test_readout_invariants_match_reference(block, n, F):
    _check(readout_invariants, reference.readout_invariants, [torch.randn(n, 10, F)], {0})


@pytest.mark.parametrize("n,F", SHAPES)
def test_embedding_components_match_reference(block, n, F):
    inputs = [torch.randn(n, 10, F), torch.randn(n, F), torch.randn(F)]
    _check(embedding_components, reference.embedding_components, inputs, {0, 1})


def test_embedding_components_gradient_of_either_output(block):
    """Each output alone back-propagates (autograd passes None for the other's gradient)."""
    messages = torch.randn(5, 10, 16, requires_grad=True)
    terms, loop = torch.randn(5, 16), torch.randn(16)
    m64 = messages.detach().double().requires_grad_()
    for k in range(2):
        got = torch.autograd.grad(embedding_components(messages, terms, loop)[k].sum(), messages)[0]
        expected = torch.autograd.grad(
            reference.embedding_components(m64, terms.double(), loop.double())[k].sum(), m64
        )[0]
        torch.testing.assert_close(got.double(), expected, **TOL)


def test_float64_refused():
    with pytest.raises(ValueError, match="float32 only"):
        normalized(torch.randn(2, 10, 8, dtype=torch.float64))
