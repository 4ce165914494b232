"""Error-bounded tables of radial filters: a function of the distance alone, as a piecewise polynomial.

Every radial filter of these models maps one scalar, the distance d, to C channels with weights
frozen at inference (TensorNet's interaction MLP times the cutoff, its embedding's distance
projections, ET's and GN's distance filters). :func:`build_radial_table` replaces such a
function f on [lower, upper] by K uniform pieces of odd degree p = 2m - 1 (Hermite
interpolation: at both ends of a piece the polynomial matches f and its first m - 1
derivatives, taken in float64 from the model's own code by forward-mode differentiation), so
the table is C^(m-1) across knots. Value and slope come from the same polynomial, so forces
are the exact derivative of the energy that is computed.

Each piece k stores its coefficients in the local variable u = (d - lower) / h - k in [0, 1]:
``coefficients`` [K, p + 1, C], ``f(d) = sum_j coefficients[k, j] u^j``, one contiguous row per
piece (one gather per edge). The bound is measured when the table is built, on a check grid
``CHECK_POINTS`` times denser than the knots: the largest error of any channel relative to
that channel's largest value over the grid (:attr:`RadialTable.bound`).
"""

import copy
import math
import warnings
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

# Check points per piece (evenly spaced in the table variable, knots included) for the bound.
CHECK_POINTS = 16
# The bound a table must reach to be used, per model dtype: far below float32 rounding; for
# float64 (only with radial="table") near what 8192 pieces reach.
BOUNDS = {torch.float32: 1e-8, torch.float64: 1e-11}
# Pieces tried: FIRST_PIECES, doubled until the bound is reached, at most MAX_PIECES.
FIRST_PIECES = 512
MAX_PIECES = 8192
MODES = ("auto", "table", "exact")


class RadialTable(nn.Module):
    """A tabulated radial filter: ``forward(d [P]) -> [P, C]``, differentiable in d once (the
    gradient is the polynomial's own slope; forces and stress need no more).

    Distances below ``lower`` or at or above ``upper`` use the first or last piece's polynomial
    (extrapolated), unless ``zero_outside``: then they give exactly 0, as a filter that
    includes the cosine cutoff does. ``at_zero`` [C] is the exact filter at distance 0 (a
    self loop's), evaluated once when the table is built.
    """

    def __init__(
        self, coefficients: Tensor, lower: float, upper: float, rate: float, bound: float, name: str,
        zero_outside: bool, at_zero: Tensor,
    ):
        super().__init__()
        self.register_buffer("coefficients", coefficients.contiguous(), persistent=False)
        self.register_buffer("at_zero", at_zero, persistent=False)
        self.lower, self.upper = float(lower), float(upper)
        self.pieces = coefficients.shape[0]
        self.degree = coefficients.shape[1] - 1
        self.rate = float(rate)
        self.bound = float(bound)
        self.name = name
        self.zero_outside = zero_outside
        # (key, the coefficients' channel blocks) for grouped lookups: see _blocks
        self._block_cache: Optional[tuple] = None

    def position(self, d: Tensor) -> Tensor:
        """The table variable t(d) [P]: 0 at ``lower``, ``pieces`` at ``upper``; uniform in d, or
        with ``rate`` > 0 uniform in exp(-rate (d - lower)) (pieces short where f varies fast)."""
        if self.rate == 0:
            return (d - self.lower) * (self.pieces / (self.upper - self.lower))
        span = -math.expm1(-self.rate * (self.upper - self.lower))
        return torch.expm1(-self.rate * (d - self.lower)) * (-self.pieces / span)

    def position_slope(self, d: Tensor) -> Tensor:
        """dt/dd [P] of :meth:`position`."""
        if self.rate == 0:
            return torch.full_like(d, self.pieces / (self.upper - self.lower))
        span = -math.expm1(-self.rate * (self.upper - self.lower))
        return torch.exp(-self.rate * (d - self.lower)) * (self.rate * self.pieces / span)

    def distance(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`position`."""
        if self.rate == 0:
            return self.lower + t * ((self.upper - self.lower) / self.pieces)
        span = -math.expm1(-self.rate * (self.upper - self.lower))
        return self.lower - torch.log1p(-t * (span / self.pieces)) / self.rate

    @property
    def channels(self) -> int:
        return self.coefficients.shape[2]

    def forward(self, d: Tensor) -> Tensor:
        return self.grouped(d, 1)[0]

    def value_and_slope(self, d: Tensor, slope: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """f(d) and (with ``slope``) f'(d), [P, C] each, from the same polynomial, without an
        autograd graph: two weighted gathers of the pieces' rows (``embedding_bag``)."""
        (value,), slopes = self._lookup(d, self._blocks(1, d.dtype), slope)
        return value, None if slopes is None else slopes[0]

    def grouped(self, d: Tensor, groups: int) -> tuple[Tensor, ...]:
        """f(d) as ``groups`` tensors [P, C / groups], consecutive channel blocks, differentiable
        in d once: a caller that uses the blocks apart never assembles a [P, C] gradient."""
        blocks = self._blocks(groups, d.dtype)
        if torch.is_grad_enabled() and d.requires_grad:
            return _GroupedTableLookup.apply(d, self, blocks)
        return self._lookup(d, blocks, slope=False)[0]

    def _blocks(self, groups: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """The coefficients' ``groups`` channel blocks as contiguous [pieces x 4, C / groups]
        copies in ``dtype``, made once per coefficient tensor (one block: a view, no copy)."""
        if groups == 1:
            return (self.coefficients.to(dtype).view(-1, self.channels),)
        key = (groups, dtype, self.coefficients.data_ptr(), self.coefficients.device)
        if self._block_cache is None or self._block_cache[0] != key:
            flat = self.coefficients.to(dtype).view(-1, self.channels)
            self._block_cache = (key, tuple(block.contiguous() for block in flat.chunk(groups, 1)))
        return self._block_cache[1]

    def _lookup(
        self, d: Tensor, weights: tuple[Tensor, ...], slope: bool
    ) -> tuple[tuple[Tensor, ...], Optional[tuple[Tensor, ...]]]:
        """Each of ``weights`` ([pieces x 4, c] coefficient blocks) evaluated at d [P], and with
        ``slope`` its d-derivative: the pieces and powers are found once for all blocks."""
        with torch.no_grad():
            t = self.position(d)
            k = torch.floor(t).clamp(0, self.pieces - 1).long()
            u = t - k.to(t.dtype)
            rows = (4 * k)[:, None] + torch.arange(4, device=d.device)
            # u^0 .. u^2, times 0 outside the table (zero_outside): exact zeros without a pass over [P, C]
            powers = torch.stack([torch.ones_like(u), u, u * u], 1)
            if self.zero_outside:
                powers = powers * self._inside(d)[:, None]
            value_weights = torch.cat([powers, powers[:, 2:] * u[:, None]], 1)
            values = tuple(
                nn.functional.embedding_bag(rows, w, per_sample_weights=value_weights, mode="sum") for w in weights
            )
            if not slope:
                return values, None
            # d u^j / dd = j u^(j-1) dt/dd
            orders = torch.arange(1, 4, dtype=u.dtype, device=d.device)
            slope_weights = torch.cat(
                [torch.zeros_like(powers[:, :1]), powers * orders * self.position_slope(d)[:, None]], 1
            )
            slopes = tuple(
                nn.functional.embedding_bag(rows, w, per_sample_weights=slope_weights, mode="sum") for w in weights
            )
        return values, slopes

    def _inside(self, d: Tensor) -> Tensor:
        inside = d < self.upper
        if self.lower > 0:
            inside = inside & (d > self.lower)
        return inside.to(d.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.name}: {self.pieces} pieces of degree {self.degree} on [{self.lower:g}, {self.upper:g}], "
            f"{self.channels} channels, bound {self.bound:.1e}"
        )


class _GroupedTableLookup(torch.autograd.Function):
    """The channel blocks of f(d), each its own output, their slopes f'(d) saved for backward:
    grad_d = sum over blocks and channels of grad_c f'_c(d)."""

    @staticmethod
    def forward(ctx, d: Tensor, table: RadialTable, blocks: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        values, slopes = table._lookup(d, blocks, slope=True)
        ctx.save_for_backward(*slopes)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor):
        grad_d = sum(torch.einsum("pc,pc->p", grad, slope) for grad, slope in zip(grads, ctx.saved_tensors))
        return grad_d, None, None


def value_and_derivative(fn: Callable[[Tensor], Tensor], d: Tensor) -> tuple[Tensor, Tensor]:
    """f(d) and f'(d) [P, C] of an elementwise-in-d function ``fn``: [P] -> [P, C] (each row
    depends on its own distance only), by forward-mode differentiation."""
    with warnings.catch_warnings():
        # torch scripts its forward-AD decompositions on first use and warns that jit is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.func.jvp(fn, (d,), (torch.ones_like(d),))


def _cubic_coefficients(f0: Tensor, g0: Tensor, f1: Tensor, g1: Tensor) -> Tensor:
    """[K, 4, C] power-basis coefficients in u of the cubics with values f0, f1 and slopes (in u)
    g0, g1 at u = 0 and 1 (each [K, C])."""
    delta = f1 - f0
    return torch.stack([f0, g0, 3 * delta - 2 * g0 - g1, g0 + g1 - 2 * delta], dim=1)


def build_radial_table(
    fn: Callable[[Tensor], Tensor],
    lower: float,
    upper: float,
    pieces: int,
    rate: float,
    name: str,
    zero_outside: bool,
) -> RadialTable:
    """Tabulate ``fn``: [P] float64 distances -> [P, C] on [lower, upper] as ``pieces`` cubic
    Hermite pieces, uniform in d (``rate`` 0) or in exp(-rate (d - lower)) (module docstring).
    The table's :attr:`~RadialTable.bound` is measured here, against ``fn`` in float64, and its
    :attr:`~RadialTable.at_zero` taken from ``fn``."""
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    with torch.no_grad():
        at_zero = fn(torch.zeros(1, dtype=torch.float64))[0]
    table = RadialTable(
        torch.zeros(pieces, 4, 1, dtype=torch.float64), lower, upper, rate, 0.0, name, zero_outside, at_zero
    )
    knots = table.distance(torch.arange(pieces + 1, dtype=torch.float64))
    knots[0], knots[-1] = lower, upper
    with torch.no_grad():
        value, slope = value_and_derivative(fn, knots)
    slope = slope / table.position_slope(knots)[:, None]  # d f / d t: one piece has length 1 in t
    table.coefficients = _cubic_coefficients(value[:-1], slope[:-1], value[1:], slope[1:]).contiguous()
    table.bound = measured_bound(table, fn)
    return table


def measured_bound(table: RadialTable, fn: Callable[[Tensor], Tensor]) -> float:
    """Largest |table - fn| of any channel relative to that channel's largest |fn|, on
    ``CHECK_POINTS`` evenly spaced points per piece (in the table variable, knots included),
    in float64; a channel that is 0 everywhere counts its absolute error."""
    t = torch.linspace(0, table.pieces, table.pieces * CHECK_POINTS + 1, dtype=torch.float64)
    grid = table.distance(t).clamp(table.lower, table.upper)
    if table.zero_outside:
        grid = grid[:-1]  # the exact filter is 0 at the upper end
    error = torch.zeros(table.channels, dtype=torch.float64)
    scale = torch.zeros(table.channels, dtype=torch.float64)
    with torch.no_grad():
        for chunk in grid.split(1 << 12):
            exact = fn(chunk)
            error = torch.maximum(error, (table(chunk) - exact).abs().amax(dim=0))
            scale = torch.maximum(scale, exact.abs().amax(dim=0))
    return float(torch.where(scale > 0, error / scale.clamp(min=1e-300), error).max())


class RadialFilter(NamedTuple):
    """A radial filter a representation offers for tabulation: ``fn`` [P] -> [P, C] (in the
    module's dtype) on [lower, upper], the table variable's ``rate`` (:meth:`RadialTable.position`),
    whether ``fn`` is 0 outside (it includes the cosine cutoff), and ``path``: the submodule of
    the representation whose ``radial_table`` attribute takes the table."""

    path: str
    fn: Callable[[Tensor], Tensor]
    lower: float
    upper: float
    rate: float
    zero_outside: bool


def basis_rate(expansion: nn.Module) -> float:
    """The table variable's rate for filters of a radial basis: expnorm functions are narrow at
    short range (uniform in exp(-alpha d)), so pieces shrink there, at 0.6 alpha (measured:
    50x smaller bounds than uniform pieces on the shipped TensorNet); Gaussians are uniform in d."""
    alpha = getattr(expansion, "alpha", None)
    return 0.6 * float(alpha) if alpha is not None else 0.0


def tabulate(radial_filter: RadialFilter, bound: float) -> RadialTable:
    """A table of ``radial_filter`` whose bound is <= ``bound``, with a power-of-two number of
    pieces from FIRST_PIECES to MAX_PIECES: the count is predicted from the bound of
    FIRST_PIECES (cubic pieces: error ~ h^4), then doubled while the bound is missed. Returns
    the last table built (MAX_PIECES) when none reaches ``bound``."""
    pieces = FIRST_PIECES
    while True:
        table = build_radial_table(
            radial_filter.fn, radial_filter.lower, radial_filter.upper, pieces, radial_filter.rate,
            radial_filter.path, radial_filter.zero_outside,
        )
        if table.bound <= bound or pieces >= MAX_PIECES:
            return table
        predicted = pieces * (table.bound / bound) ** 0.25
        pieces = min(MAX_PIECES, max(2 * pieces, 2 ** math.ceil(math.log2(predicted))))


def attach_radial_tables(
    representation: nn.Module, dtype: torch.dtype, mode: str, bound: Optional[float] = None
) -> list[RadialTable]:
    """Give every radial filter of ``representation`` (its ``radial_filters()``) a table in
    ``dtype``, built in float64 from a float64 copy of its weights, per ``mode``:

    - "exact": none;
    - "table": every filter whose table reaches ``BOUNDS[dtype]``; the others keep the exact
      filter, with a warning naming the filter and the bound reached;
    - "auto": as "table" for float32, "exact" for float64. Measured: float64 tables at their
      1e-11 bound (8192 pieces) still moved forces of a TorchMD-Net variant checkpoint by
      1.06e-9, past the 1e-9 float64 parity (the slope of a cubic piece is one order of h less
      accurate than its value), so float64 keeps the exact filters unless asked.

    ``bound`` replaces ``BOUNDS[dtype]`` (tests evaluate a float32 model's tables in float64 with
    ``dtype=torch.float64, bound=BOUNDS[torch.float32]``: the same tables, coefficients unrounded).
    Returns the tables attached. A representation without ``radial_filters`` gets none.
    """
    if mode not in MODES:
        raise ValueError(f"unknown radial={mode!r}; choose one of {', '.join(MODES)}")
    if mode == "exact" or (mode == "auto" and dtype == torch.float64) or not hasattr(representation, "radial_filters"):
        return []
    bound = BOUNDS[dtype] if bound is None else bound
    exact64 = copy.deepcopy(representation).to(torch.float64)
    attached = []
    for radial_filter in exact64.radial_filters():
        table = tabulate(radial_filter, bound)
        if table.bound > bound:
            warnings.warn(
                f"radial filter {radial_filter.path}: a table of {table.pieces} pieces reaches a bound of "
                f"{table.bound:.1e}, above the {bound:.0e} required; it runs the exact filter",
                stacklevel=4,  # load_model's caller
            )
            continue
        table = table.to(dtype)
        representation.get_submodule(radial_filter.path).radial_table = table
        attached.append(table)
    return attached


def stacked_table(tables: list[Optional[RadialTable]]) -> Optional[RadialTable]:
    """One table with the channels of ``tables`` side by side (coefficients concatenated, each
    table's block in order), so one lookup evaluates them all; None unless every table exists
    and they share their grid (pieces, lower, upper, rate, zero_outside) and dtype and device.
    Its ``bound`` is the largest of theirs."""
    if not tables or any(t is None for t in tables):
        return None
    first = tables[0]
    grid = (first.pieces, first.lower, first.upper, first.rate, first.zero_outside, first.coefficients.dtype,
            first.coefficients.device)
    if any((t.pieces, t.lower, t.upper, t.rate, t.zero_outside, t.coefficients.dtype, t.coefficients.device) != grid
           for t in tables):
        return None
    return RadialTable(
        torch.cat([t.coefficients for t in tables], 2), first.lower, first.upper, first.rate,
        max(t.bound for t in tables), "+".join(t.name for t in tables), first.zero_outside,
        torch.cat([t.at_zero for t in tables]),
    )


def radial_tables(model: nn.Module) -> list[RadialTable]:
    """The tables attached anywhere in ``model``."""
    return [m for m in model.modules() if isinstance(m, RadialTable)]
