"""Torch reference of :mod:`fastnnp.kernels.common.cfconv`, for checking it in float64.

Takes the kernel's inputs with the neighbour table's edges as ``(receiver, slot, sender)``
(:func:`fastnnp.kernels.tensornet.reference.table_edges`) and the radial filter as a function of
the distance ``[E] -> [E, F]`` built from the reference model's modules (:func:`exact_filter`)
or from a :class:`~fastnnp.models.common.radial_table.RadialTable` (:func:`table_filter`, its
own torch lookup in the inputs' dtype), and computes the output differentiably, in the inputs'
dtype, with TorchMD-Net 3.x's reductions (:func:`fastnnp.models.common.scatter.scatter`).
"""

import copy
from typing import Callable

from torch import Tensor, nn

from ...models.common.radial_table import RadialTable
from ...models.common.scatter import scatter
from ..tensornet.reference import Edges

FilterFn = Callable[[Tensor], Tensor]


def exact_filter(module: nn.Module, expansion: nn.Module) -> FilterFn:
    """``module.distance_filter`` (a ``CFConv`` or a ``NeighborEmbedding``: its linear(s) after
    the basis ``expansion``, times the cutoff) as a function of the distance."""
    return lambda d: module.distance_filter(expansion(d), d)


def table_filter(table: RadialTable) -> FilterFn:
    """``table`` evaluated in the distances' dtype (a copy; differentiable in d)."""
    return lambda d: copy.deepcopy(table).to(d.dtype)(d)


def cfconv(filter_fn: FilterFn, vec: Tensor, h: Tensor, edges: Edges, aggr: str) -> Tensor:
    """[N, F]: ``aggr`` over the edges of filter_fn(|vec|) * h[sender] into the receivers, with
    ``vec`` [N, K, 3] the table's edge vectors and ``h`` [N, F] the features."""
    receiver, slot, sender = edges
    messages = filter_fn(vec[receiver, slot].norm(dim=-1)) * h[sender]
    return scatter(messages, receiver, h.shape[0], aggr)
