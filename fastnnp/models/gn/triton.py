"""The Graph Network on Triton kernels: neighbour search and every per-edge step fused.

Same parameters (and state-dict keys) as the reference :class:`GraphNetwork`. The Triton
neighbour search (:class:`~fastnnp.kernels.common.search_plan.PlannedTableSearch`) gives a padded
table grouped by receiver, :func:`~fastnnp.kernels.common.table_vectors.table_vectors` its edge
vectors (differentiable in positions and box: forces and stress), and each continuous-filter
convolution is one :func:`~fastnnp.kernels.common.cfconv.cfconv` (radial filter and aggregation
fused, forward and backward, nothing stored per edge and channel):

* the neighbour embedding: ``combine([x, cfconv(embedding(z), distance_proj filter, "add")])``;
* each interaction: ``x + lin(act(lin2(cfconv(lin1(x), net filter, aggr))))``.

A filter with a radial table attached (``neighbor_embedding.radial_table``,
``interactions[k].conv.radial_table``; :func:`fastnnp.load_model` attaches them for
``radial="auto"`` or ``"table"``) is read from the table (no basis, MLP or cutoff per edge);
otherwise the kernels compute basis, linear(s) and cutoff per edge. The per-atom linears,
activations and the embedding lookups stay the reference modules' torch code. Parameters are
constants (forces and stress, not training); their kernel views
(``kernel_constants``, :mod:`fastnnp.models.common.triton_representation`) are made once per parameter version.
"""

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from ...kernels.common.cfconv import ConvFilter, cfconv, conv_filter, neighbor_embedding_filter
from ...kernels.common.radial_table import KernelTable, kernel_table
from ...neighbors.table import given_order
from ..common.activations import kernel_code
from ..common.triton_representation import TritonRepresentation
from .reference import GraphNetwork

Filter = Union[ConvFilter, KernelTable]


class KernelConstants(NamedTuple):
    """The neighbour embedding's filter (None without one) and each interaction's."""

    embedding_filter: Optional[Filter]
    filters: tuple[Filter, ...]


class TritonGraphNetwork(TritonRepresentation, GraphNetwork):
    """:class:`GraphNetwork` with its neighbour search and edge work on Triton kernels (float32)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_kernels(interaction.act for interaction in self.interactions)

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, None]:
        table, vec, z, batch = self.kernel_edges(z, pos, batch, box)
        constants = self.kernel_constants()
        x = self.embedding(z)
        if self.neighbor_embedding is not None:
            embedding = self.neighbor_embedding
            neighbors = cfconv(vec, embedding.embedding(z), table.neighbors, table.counts, constants.embedding_filter, "add")
            x = embedding.combine(torch.cat([x, neighbors], dim=1))
        for interaction, flt in zip(self.interactions, constants.filters):
            conv = interaction.conv
            messages = cfconv(vec, conv.lin1(x), table.neighbors, table.counts, flt, self.aggr)
            x = x + interaction.lin(interaction.act(conv.lin2(messages)))
        (x,) = given_order(table, x)
        return x, None

    def _make_constants(self) -> KernelConstants:
        expansion, lower, upper = self.distance_expansion, self.cutoff_lower, self.cutoff_upper
        embedding = self.neighbor_embedding
        embedding_filter = None if embedding is None else neighbor_embedding_filter(embedding, expansion, lower, upper)
        filters = tuple(
            kernel_table(block.conv.radial_table) if block.conv.radial_table is not None
            else conv_filter(expansion, block.mlp[0], lower, upper, block.mlp[2], kernel_code(block.mlp[1]))
            for block in self.interactions
        )
        return KernelConstants(embedding_filter, filters)
