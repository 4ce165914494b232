"""The Equivariant Transformer on Triton kernels: neighbour search and the attention's edge work fused.

Same parameters (and state-dict keys) as the reference :class:`EquivariantTransformer`. The
neighbour search (:class:`~fastnnp.kernels.common.search_plan.PlannedTableSearch`) gives a padded
table grouped by receiver and :func:`~fastnnp.kernels.common.table_vectors.table_vectors` its
edge vectors (forces and stress flow back through them). Each layer's attention messages
(:mod:`fastnnp.kernels.et.attention_messages`) run the distance filter, the attention, the
cutoff and both aggregations in one kernel, forward and backward, never storing anything per
edge and channel; the filter is the layer's radial table when one is attached
(``attention_layers[k].radial_table``, :func:`fastnnp.load_model` attaches them for
``radial="auto"`` or ``"table"``), else computed exactly per edge (basis, linear, activation).
The self loops (d = 0) use the layer's filter at 0 (``pair_filter`` there: the table's first knot
or the exact value). The atom-local steps (layer norms, the q, k, v, vec and output
projections, the gated update) are the reference layer's torch code.

The neighbour embedding's sum over neighbours is the continuous-filter convolution kernel
(:func:`fastnnp.kernels.common.cfconv.cfconv`, "add"; its filter ``distance_proj(rbf) * cutoff``
exact or from the embedding's radial table), followed by its torch ``combine`` linear.

Parameters are constants (energies, forces, stress; not training); their kernel views
(``kernel_constants``, :mod:`fastnnp.models.common.triton_representation`) are made once per parameter version.
"""

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from ...kernels.common.basis import kernel_basis
from ...kernels.common.cfconv import ConvFilter, cfconv, neighbor_embedding_filter
from ...kernels.common.radial_table import KernelTable, kernel_table
from ...kernels.et.attention_messages import Attention, DistanceFilter, attention_messages
from ...neighbors.table import given_order
from ..common.activations import kernel_code
from ..common.triton_representation import TritonRepresentation
from .reference import EquivariantMultiHeadAttention, EquivariantTransformer

def layer_filter(layer: EquivariantMultiHeadAttention, expansion: nn.Module) -> Optional[Union[DistanceFilter, KernelTable]]:
    """The kernel's view of a layer's distance filter: its radial table when one is attached,
    else the stacked projections; None without projections (distance_influence "none")."""
    if not layer.has_filter:
        return None
    if layer.radial_table is not None:
        return kernel_table(layer.radial_table)
    projections = [p for p in (layer.dk_proj, layer.dv_proj) if p is not None]
    cutoff = layer.cutoff
    return DistanceFilter(
        *kernel_basis(expansion), cutoff.cutoff_lower, cutoff.cutoff_upper, kernel_code(layer.act),
        torch.cat([p.weight.detach() for p in projections]).t().contiguous(),
        torch.cat([p.bias.detach() for p in projections]).contiguous(),
    )


def layer_attention(layer: EquivariantMultiHeadAttention, expansion: nn.Module) -> Attention:
    """The kernels' description of a layer (:class:`~fastnnp.kernels.et.attention_messages.Attention`)."""
    weight = layer.q_proj.weight
    loop = weight.new_zeros(0)
    if layer.has_filter:
        zero = weight.new_zeros(1)
        attr = None if layer.radial_table is not None else expansion(zero)
        loop = layer.pair_filter(zero, attr)[0].detach().contiguous()
    return Attention(
        layer.num_heads, kernel_code(layer.attn_activation), layer.dk_proj is not None, layer.dv_proj is not None,
        layer.vector_cutoff, layer.cutoff.cutoff_lower, layer.cutoff.cutoff_upper, layer_filter(layer, expansion), loop,
    )


class TritonEquivariantTransformer(TritonRepresentation, EquivariantTransformer):
    """:class:`EquivariantTransformer` with its neighbour search and edge work on Triton kernels
    (float32; exact float32 arithmetic, no TF32)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_kernels(act for layer in self.attention_layers for act in (layer.act, layer.attn_activation))

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        table, edge_vec, z, batch = self.kernel_edges(z, pos, batch, box)
        constants = self.kernel_constants()
        x = self.embedding(z)
        if self.neighbor_embedding is not None:
            embedding = self.neighbor_embedding
            neighbors = cfconv(edge_vec, embedding.embedding(z), table.neighbors, table.counts,
                               constants.neighbor_filter, "add")
            x = embedding.combine(torch.cat([x, neighbors], dim=1))
        vec = x.new_zeros(x.shape[0], 3, x.shape[1])
        for layer, attention in zip(self.attention_layers, constants.layers):
            dx, dvec = self._layer(layer, attention, x, vec, edge_vec, table.neighbors, table.counts)
            x = x + dx
            vec = vec + dvec
        return given_order(table, self.out_norm(x), vec)

    def _layer(self, layer: EquivariantMultiHeadAttention, attention: Attention, x: Tensor, vec: Tensor,
               edge_vec: Tensor, neighbors: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """One layer's updates (dx [N, F], dvec [N, 3, F]): the reference layer's projections and
        gated update around the attention-message kernel."""
        f = self.hidden_channels
        y = layer.layernorm(x)
        vec1, vec2, vec3 = torch.split(layer.vec_proj(vec), f, dim=-1)
        m, mvec = attention_messages(
            layer.q_proj(y), layer.k_proj(y), layer.v_proj(y), vec, edge_vec, neighbors, counts, attention
        )
        o1, o2, o3 = torch.split(layer.o_proj(m), f, dim=1)
        return (vec1 * vec2).sum(dim=1) * o2 + o3, vec3 * o1.unsqueeze(1) + mvec

    def _make_constants(self) -> "KernelConstants":
        expansion, embedding = self.distance_expansion, self.neighbor_embedding
        neighbor_filter = (
            None if embedding is None
            else neighbor_embedding_filter(embedding, expansion, self.cutoff_lower, self.cutoff_upper)
        )
        return KernelConstants(neighbor_filter, tuple(layer_attention(layer, expansion) for layer in self.attention_layers))


class KernelConstants(NamedTuple):
    """The neighbour embedding's filter (None without one) and each layer's :class:`Attention`."""

    neighbor_filter: Optional[Union[ConvFilter, KernelTable]]
    layers: tuple[Attention, ...]
