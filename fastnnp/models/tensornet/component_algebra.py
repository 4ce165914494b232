"""TensorNet's per-atom tensors as [n, 10, F] components, with constant-matrix algebra.

A rank-2 tensor X = I 1 + A + S per atom and channel is carried as ten components (the
layout of the Triton path's arrays too): I, the vector a = (x, y, z) with A = skew(a), and the
six entries xx yy zz xy xz yz of the symmetric traceless S. The conversions to and from the
nine entries (row-major) and the squared norms are constant matrices applied over the
component axis: one matmul each, where the [n, 3, 3, F] formulation
(:mod:`fastnnp.models.tensornet.cartesian`, the kernels' references) takes tens of small ops.
Every S here is traceless (a decomposition's, or a channel mix of one), which the norm
weights assume.
"""

import functools

import torch
from torch import Tensor, nn

# Component -> its part (0 I, 1 A, 2 S): the weight group of each component.
PART_OF_COMPONENT = (0, 1, 1, 1, 2, 2, 2, 2, 2, 2)
COMPONENT_GROUP = torch.tensor(PART_OF_COMPONENT)
# The sizes of the I, A (vector) and S (six entries) parts of the component axis.
PART_SIZES = (1, 3, 6)
# Sign of each component under X -> X^T (A flips): the message to the other end of a pair.
TRANSPOSE_SIGN = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

_SIX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
# skew(a)[r, c] = sign * a[axis] for each off-diagonal entry (r, c): (axis, sign).
_SKEW = {(0, 1): (2, -1.0), (0, 2): (1, 1.0), (1, 0): (2, 1.0), (1, 2): (0, -1.0), (2, 0): (1, -1.0), (2, 1): (0, 1.0)}


def _entries_of_components() -> Tensor:
    """[9, 10]: the nine entries of I 1 + skew(a) + S from the components."""
    matrix = torch.zeros(9, 10, dtype=torch.float64)
    for r in range(3):
        matrix[4 * r, 0] = 1.0
    for (r, c), (axis, sign) in _SKEW.items():
        matrix[3 * r + c, 1 + axis] = sign
    for k, (r, c) in enumerate(_SIX):
        matrix[3 * r + c, 4 + k] = 1.0
        matrix[3 * c + r, 4 + k] = 1.0
    return matrix


def _components_of_entries() -> Tensor:
    """[10, 9]: I = trace / 3, a from the skew part, S = the symmetric part minus I 1."""
    matrix = torch.zeros(10, 9, dtype=torch.float64)
    for r in range(3):
        matrix[0, 4 * r] = 1.0 / 3.0
    for (r, c), (axis, sign) in _SKEW.items():
        matrix[1 + axis, 3 * r + c] = 0.5 * sign
    for k, (r, c) in enumerate(_SIX):
        matrix[4 + k, 3 * r + c] += 0.5
        matrix[4 + k, 3 * c + r] += 0.5
        if r == c:
            matrix[4 + k, [0, 4, 8]] -= 1.0 / 3.0
    return matrix


def _traceless() -> Tensor:
    """[10, 10]: keeps I and a, removes the trace from the six entries (a symmetric -> S)."""
    matrix = torch.eye(10, dtype=torch.float64)
    matrix[4:7, 4:7] -= 1.0 / 3.0
    return matrix


# Squared-norm weights: |X|^2 = 3 I^2 + 2 |a|^2 + sum of S's diagonal^2 + 2 sum of its off-diagonal^2,
# and TensorNet's readout invariants (3 I^2 | |A|^2 | |S|^2), rows of the same weights.
_NORM_WEIGHTS = (3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0)


def _part_norms() -> Tensor:
    """[3, 10]: the squared norms of I 1, A and S from the squared components."""
    matrix = torch.zeros(3, 10, dtype=torch.float64)
    for k, (group, weight) in enumerate(zip(PART_OF_COMPONENT, _NORM_WEIGHTS)):
        matrix[group, k] = weight
    return matrix


_MATRICES = {
    "entries": _entries_of_components,
    "components": _components_of_entries,
    "traceless": _traceless,
    "part_norms": _part_norms,
    "norm": lambda: torch.tensor(_NORM_WEIGHTS, dtype=torch.float64)[None],
    "transpose_sign": lambda: torch.tensor(TRANSPOSE_SIGN, dtype=torch.float64)[:, None],
}


@functools.lru_cache(maxsize=64)
def constant(name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """One of the constant matrices above in ``dtype`` on ``device`` (made once)."""
    return _MATRICES[name]().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def component_group(device: torch.device) -> Tensor:
    """:data:`COMPONENT_GROUP` on ``device`` (made once)."""
    return COMPONENT_GROUP.to(device)


def _of(name: str, like: Tensor) -> Tensor:
    return constant(name, like.dtype, like.device)


def _apply(name: str, components: Tensor) -> Tensor:
    """The constant matrix ``name`` [k, c] over the component axis of [n, c, F] -> [n, k, F]:
    one ``bmm`` with the matrix broadcast over atoms (``matmul`` would add a reshape and four
    view ops around the same ``bmm``, on every call and in backward)."""
    matrix = _of(name, components)
    return torch.bmm(matrix.expand(components.shape[0], -1, -1), components)


def to_tensors(components: Tensor) -> Tensor:
    """Components [n, 10, F] -> tensors [n, 3, 3, F]."""
    n, _, F = components.shape
    return _apply("entries", components).view(n, 3, 3, F)


def to_components(tensors: Tensor) -> Tensor:
    """Tensors [n, 3, 3, F] -> components [n, 10, F] (I, A and S of each)."""
    n = tensors.shape[0]
    return _apply("components", tensors.reshape(n, 9, -1))


def traceless(components: Tensor) -> Tensor:
    """Components [n, 10, F] whose six entries are any symmetric tensor -> with S its traceless part."""
    return _apply("traceless", components)


def squared_norm(components: Tensor) -> Tensor:
    """Squared Frobenius norms [n, F] of the tensors of components [n, 10, F]."""
    return _apply("norm", components * components).view(components.shape[0], components.shape[2])


def part_norms(components: Tensor) -> Tensor:
    """Squared norms [n, 3, F] of the I 1, A and S parts of components [n, 10, F]."""
    return _apply("part_norms", components * components)


def per_component(values: Tensor) -> Tensor:
    """Per-part values [..., 3, F] -> per component [..., 10, F] (I, A, A, A, S x 6)."""
    return values.index_select(-2, component_group(values.device))


def transposed(components: Tensor) -> Tensor:
    """Components [..., 10, C] of X -> those of X^T (the vector a flips sign)."""
    return components * _of("transpose_sign", components)


def mix_parts(components: Tensor, linears: nn.ModuleList) -> Tensor:
    """The three bias-free channel-mixing linears (I, A, S) on their parts of components [n, 10, F]."""
    # one split (its backward one cat), not three slices (each a zero-filled full-size gradient)
    parts = components.split(PART_SIZES, 1)
    return torch.cat([linear(part) for linear, part in zip(linears, parts, strict=True)], 1)
