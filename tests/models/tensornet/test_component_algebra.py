"""The [n, 10, F] component algebra against the [n, 3, 3, F] cartesian definitions, in float64."""

import pytest
import torch

from fastnnp.models.tensornet import cartesian
from fastnnp.models.tensornet import component_algebra as ca

N, F = 5, 7


def _tensors(seed: int) -> torch.Tensor:
    """General (not symmetric, with trace) tensors [N, 3, 3, F]."""
    torch.manual_seed(seed)
    return torch.randn(N, 3, 3, F, dtype=torch.float64)


def _cartesian_components(X: torch.Tensor) -> torch.Tensor:
    scalar, antisym, sym = cartesian.decompose(X)
    return torch.cat((scalar[:, None], cartesian.skew_to_vector(antisym), cartesian.symmetric_to_six(sym)), 1)


def test_conversions_are_the_decomposition_and_its_inverse():
    X = _tensors(0)
    components = ca.to_components(X)
    torch.testing.assert_close(components, _cartesian_components(X), rtol=0, atol=1e-14)
    torch.testing.assert_close(ca.to_tensors(components), X, rtol=0, atol=1e-14)
    scalar, antisym, sym = cartesian.decompose(X)
    assert ca.to_tensors(components).sub(cartesian.compose(scalar, antisym, sym)).abs().max() < 1e-14


def test_norms_of_traceless_components():
    components = ca.to_components(_tensors(1))
    X = ca.to_tensors(components)
    torch.testing.assert_close(ca.squared_norm(components), cartesian.squared_norm(X), rtol=1e-13, atol=1e-14)
    scalar, antisym, sym = cartesian.decompose(X)
    parts = torch.stack((3 * scalar**2, cartesian.squared_norm(antisym), cartesian.squared_norm(sym)), 1)
    torch.testing.assert_close(ca.part_norms(components), parts, rtol=1e-13, atol=1e-14)


def test_traceless_keeps_i_and_a_and_removes_the_trace_of_the_six_entries():
    torch.manual_seed(2)
    messages = torch.randn(N, 10, F, dtype=torch.float64)
    sym = cartesian.decompose(cartesian.six_to_symmetric(messages[:, 4:]))[2]
    expected = torch.cat((messages[:, :4], cartesian.symmetric_to_six(sym)), 1)
    torch.testing.assert_close(ca.traceless(messages), expected, rtol=0, atol=1e-14)


def test_transposed_components_are_those_of_the_transpose():
    X = _tensors(3)
    torch.testing.assert_close(ca.transposed(ca.to_components(X)), ca.to_components(X.transpose(1, 2)), rtol=0, atol=1e-14)


@pytest.mark.parametrize("part", range(3))
def test_per_component_and_mix_parts_follow_the_groups(part):
    torch.manual_seed(4)
    values = torch.randn(N, 3, F, dtype=torch.float64)
    spread = ca.per_component(values)
    for k in range(10):
        assert torch.equal(spread[:, k], values[:, int(ca.COMPONENT_GROUP[k])])
    linears = torch.nn.ModuleList(torch.nn.Linear(F, F, bias=False, dtype=torch.float64) for _ in range(3))
    components = torch.randn(N, 10, F, dtype=torch.float64)
    mixed = ca.mix_parts(components, linears)
    start = sum(ca.PART_SIZES[:part])
    part_slice = slice(start, start + ca.PART_SIZES[part])
    torch.testing.assert_close(mixed[:, part_slice], components[:, part_slice] @ linears[part].weight.T)
