"""Device code that reads a radial table (:class:`~fastnnp.models.common.radial_table.RadialTable`)
instead of running a radial filter: the kernels' view of a table and its per-edge lookup.

A table holds ``coefficients`` [K, 4, C] (float32, contiguous): piece k's cubic in the local
variable u = t - k, t = position(d) in [0, K] (:meth:`RadialTable.position`: uniform in d, or
with rate > 0 uniform in exp(-rate (d - lower))). An edge's lookup is:

* :func:`table_position`, once per edge: t, the piece k = clamp(floor(t), 0, K - 1), u = t - k
  and dt/dd, exactly as :meth:`RadialTable.value_and_slope` computes them (the expm1 form of t
  for rate > 0, in float32; :func:`expm1` since the interpreter has no libdevice), and whether
  the edge lies inside the table's support (``ZERO_OUTSIDE``: 0 at or beyond ``upper``, and at or
  below ``lower`` when ``HAS_LOWER``);
* :func:`table_group`, per channel group g (channels g F .. g F + F - 1, TensorNet's I, A, S):
  the four coefficient rows of the edge's piece, one gather of 4 x F contiguous floats, and from
  that one polynomial the value P(u) and the slope P'(u) dt/dd [M, BF] (both exactly 0 outside).

The slope is the derivative of the value that is computed, so forces stay the exact gradient of
the tabulated energy, as on the torch path.
"""

import math
from typing import NamedTuple

import triton
import triton.language as tl
from torch import Tensor

from .op_args import register_filter

# The table kernels' float32 scalar arguments.
TABLE_FLOAT_SCALARS = ("lower", "upper", "rate", "scale", "slope_scale")


@register_filter
class KernelTable(NamedTuple):
    """A radial table as the kernels take it: ``coefficients`` [K, 4, C] float32, its support
    [lower, upper], ``rate`` (0: uniform in d), t(d) = (d - lower) ``scale`` (rate 0) or
    -expm1(-rate (d - lower)) ``scale``, and dt/dd = ``slope_scale`` (rate 0) or
    exp(-rate (d - lower)) ``slope_scale``; ``zero_outside`` as the table's."""

    coefficients: Tensor
    pieces: int
    lower: float
    upper: float
    rate: float
    scale: float
    slope_scale: float
    zero_outside: bool

    @property
    def channels(self) -> int:
        return self.coefficients.shape[2]

    def scalars(self) -> tuple:
        """The kernels' scalar arguments: pieces, lower, upper, rate, scale, slope_scale."""
        return self.pieces, self.lower, self.upper, self.rate, self.scale, self.slope_scale

    def constexprs(self) -> dict:
        return dict(RATE=self.rate > 0, ZERO_OUTSIDE=self.zero_outside, HAS_LOWER=self.lower > 0)


def kernel_table(table) -> KernelTable:
    """The kernels' view of a :class:`~fastnnp.models.common.radial_table.RadialTable` (float32).
    The scales are the ones :meth:`RadialTable.position` and ``position_slope`` use, rounded
    to float32 by the launch as torch rounds them in a float32 table."""
    lower, upper, rate, pieces = table.lower, table.upper, table.rate, table.pieces
    if rate == 0:
        scale = slope_scale = pieces / (upper - lower)
    else:
        span = -math.expm1(-rate * (upper - lower))
        scale, slope_scale = pieces / span, rate * pieces / span
    coefficients = table.coefficients.detach().float().contiguous()
    return KernelTable(coefficients, pieces, lower, upper, rate, scale, slope_scale, table.zero_outside)


@triton.jit
def expm1(x):
    """exp(x) - 1 in float32, accurate near 0 as well: Taylor to degree 8 for |x| < 0.5 (its
    truncation error is below 1e-8 relative there), exp(x) - 1 beyond."""
    series = x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (
        1.0 / 720.0 + x * (1.0 / 5040.0 + x * (1.0 / 40320.0))))))))
    return tl.where(tl.abs(x) < 0.5, series, tl.exp(x) - 1.0)


@triton.jit
def table_position(d, valid, pieces, lower, upper, rate, scale, slope_scale,
                   RATE: tl.constexpr, ZERO_OUTSIDE: tl.constexpr, HAS_LOWER: tl.constexpr):
    """Per edge (distances ``d`` [M]): (first coefficient row 4 k [M] int64, u [M], dt/dd [M],
    lookup mask [M]) — the mask is ``valid`` and, with ``ZERO_OUTSIDE``, inside the support."""
    if RATE:
        t = -expm1(-rate * (d - lower)) * scale
        dt = tl.exp(-rate * (d - lower)) * slope_scale
    else:
        t = (d - lower) * scale
        dt = tl.zeros_like(d) + slope_scale
    k = tl.minimum(tl.maximum(tl.floor(t), 0.0), (pieces - 1).to(tl.float32))
    u = t - k
    use = valid
    if ZERO_OUTSIDE:
        use = use & (d < upper)
        if HAS_LOWER:
            use = use & (d > lower)
    return 4 * k.to(tl.int64), u, dt, use


@triton.jit
def table_channels(coef_ptr, row, u, dt, use, chan, mask, C, SLOPE: tl.constexpr):
    """Value [M, BC] of a table's channels ``chan`` [BC] (those in ``mask``) of C at the edges'
    pieces (``row``, ``u``, ``dt``, ``use`` from :func:`table_position`), and with ``SLOPE`` its
    d/dd (else the value again): the piece's four rows gathered once, value and slope from the
    same cubic, 0 where not ``use``."""
    offsets = row[:, None] * C + chan[None, :]
    m = use[:, None] & mask[None, :]
    c0 = tl.load(coef_ptr + offsets, mask=m, other=0.0)
    c1 = tl.load(coef_ptr + offsets + C, mask=m, other=0.0)
    c2 = tl.load(coef_ptr + offsets + 2 * C, mask=m, other=0.0)
    c3 = tl.load(coef_ptr + offsets + 3 * C, mask=m, other=0.0)
    uu = u[:, None]
    value = c0 + uu * (c1 + uu * (c2 + uu * c3))
    if SLOPE:
        slope = (c1 + uu * (2.0 * c2 + uu * (3.0 * c3))) * dt[:, None]
    else:
        slope = value
    return value, slope


@triton.jit
def table_group(coef_ptr, row, u, dt, use, group: tl.constexpr, F, BF: tl.constexpr, SLOPE: tl.constexpr):
    """:func:`table_channels` of channel group ``group`` (F channels) of a table of 3F (TensorNet's I, A, S)."""
    f = tl.arange(0, BF)
    return table_channels(coef_ptr, row, u, dt, use, group * F + f, f < F, 3 * F, SLOPE)
