"""The kernels' table lookup (:mod:`fastnnp.kernels.common.radial_table`) in float32 against the
torch table (:meth:`RadialTable.value_and_slope`) in float32 and in float64, under the Triton
interpreter: the piece index and clamping, the expm1 form of the position, the support."""

import copy

import pytest
import torch
import triton
import triton.language as tl

from fastnnp.kernels.common.radial_table import expm1, kernel_table, table_group, table_position
from fastnnp.models.common.radial_table import build_radial_table

F = 8
LOWER, UPPER = 0.5, 4.0


@triton.jit
def _lookup_kernel(d_ptr, value_ptr, slope_ptr, coef_ptr, M, F, pieces, lower, upper, rate, scale, slope_scale,
                   RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr,
                   BM: tl.constexpr, BF: tl.constexpr):
    m = tl.arange(0, BM)
    f = tl.arange(0, BF)
    valid = m < M
    d = tl.load(d_ptr + m, mask=valid, other=0.0)
    piece, u, dt, use = table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale,
                                       RATE, ZERO_OUTSIDE, HAS_LOWER)
    mask = valid[:, None] & (f[None, :] < F)
    for g in tl.static_range(3):
        value, slope = table_group(coef_ptr, piece, u, dt, use, g, F, BF, True)
        offsets = m[:, None] * (3 * F) + g * F + f[None, :]
        tl.store(value_ptr + offsets, value, mask=mask)
        tl.store(slope_ptr + offsets, slope, mask=mask)


@triton.jit
def _expm1_kernel(x_ptr, y_ptr, N, BN: tl.constexpr):
    i = tl.arange(0, BN)
    tl.store(y_ptr + i, expm1(tl.load(x_ptr + i, mask=i < N, other=0.0)), mask=i < N)


def _filter(d: torch.Tensor) -> torch.Tensor:
    """A smooth [P] -> [P, 3F] test filter, 0 at the upper cutoff like TensorNet's."""
    k = torch.arange(1, 3 * F + 1, dtype=d.dtype)
    cut = 0.5 * (torch.cos(torch.pi * d / UPPER) + 1)
    return torch.sin(k * d[:, None] / 3) * torch.exp(-0.3 * k * d[:, None] / F) * cut[:, None]


def _lookup(table, d: torch.Tensor):
    kt = kernel_table(table)
    value = torch.zeros(d.shape[0], kt.channels)
    slope = torch.zeros_like(value)
    _lookup_kernel[(1,)](d, value, slope, kt.coefficients, d.shape[0], F, *kt.scalars(), **kt.constexprs(),
                         BM=triton.next_power_of_2(d.shape[0]), BF=triton.next_power_of_2(F))
    return value, slope


@pytest.mark.parametrize("rate", [0.0, 1.5], ids=["uniform", "rate"])
@pytest.mark.parametrize("lower", [0.0, LOWER], ids=["nolower", "lower"])
@pytest.mark.parametrize("zero_outside", [True, False], ids=["zero-outside", "extrapolated"])
def test_lookup_matches_torch_table(rate, lower, zero_outside):
    table = build_radial_table(_filter, lower, UPPER, 256, rate, "test", zero_outside).float()
    inside = torch.rand(200, dtype=torch.float64) * (UPPER - lower) + lower
    knots = table.distance(torch.arange(0, 257, 16, dtype=torch.float64))
    near_lower = lower + torch.tensor([0.0, 1e-7, 1e-5, 1e-3], dtype=torch.float64)
    outside = torch.tensor([UPPER, UPPER + 1e-3, 5.0, max(lower - 0.1, 0.0)], dtype=torch.float64)
    d = torch.cat([inside, knots, near_lower, outside]).float()
    value, slope = _lookup(table, d)
    value32, slope32 = table.value_and_slope(d)
    value64, slope64 = copy.deepcopy(table).double().value_and_slope(d.double())
    for got, torch32, exact in ((value, value32, value64), (slope, slope32, slope64)):
        scale = exact.abs().amax(dim=0).clamp(min=1e-3)  # per channel
        error32 = ((torch32.double() - exact) / scale).abs().max()  # torch's own float32 rounding
        # no further from the float64 evaluation of the same coefficients than torch's float32
        assert ((got.double() - exact) / scale).abs().max() <= 1.5 * error32 + 1e-7
        # and the same as torch's float32 up to that rounding
        assert ((got - torch32).double() / scale).abs().max() <= 2 * error32 + 1e-7
    if not zero_outside:  # the end pieces extrapolated, as by the torch table (checked above)
        return
    # exactly 0 outside the support, as the torch table
    beyond = (d >= UPPER) | ((d <= lower) if lower > 0 else torch.zeros_like(d, dtype=torch.bool))
    assert beyond.sum() >= 3
    assert (value[beyond] == 0).all() and (slope[beyond] == 0).all()


def test_expm1_is_accurate_near_zero():
    x = -torch.cat([torch.logspace(-9, 0.6, 60, dtype=torch.float64), torch.tensor([0.0, 0.49999, 0.5, 0.50001, 3.0], dtype=torch.float64)])
    y = torch.empty(x.shape[0])
    _expm1_kernel[(1,)](x.float(), y, x.shape[0], BN=triton.next_power_of_2(x.shape[0]))
    exact = torch.expm1(x.float().double())
    torch.testing.assert_close(y.double(), exact, rtol=4e-7, atol=0)
