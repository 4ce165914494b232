"""TensorNet on Triton kernels: neighbour search and all per-edge work fused on the GPU.

Same parameters (and state-dict keys) as the reference :class:`TensorNet`; the kernels read
them directly. Neighbour search (:mod:`fastnnp.kernels.common.neighbor_search`) gives a padded table
grouped by receiver; the embedding and interaction messages
(:mod:`fastnnp.kernels.tensornet.embedding_messages`, :mod:`fastnnp.kernels.tensornet.interaction_messages`) run
the per-pair radial filter and the aggregation in one kernel each, forward and backward, never
storing anything per edge and channel. The filter comes from one of two kernel families:

* with a radial table attached (``tensor_embedding.radial_table``, ``layers[k].radial_table``;
  :func:`fastnnp.load_model` attaches them for ``radial="auto"`` or ``"table"``,
  :mod:`fastnnp.models.common.radial_table`), the table kernels look each edge's filter value up
  (a gather of one piece's four coefficient rows, :mod:`fastnnp.kernels.common.radial_table`) and
  take the edge-vector gradient from the same cubic's slope: no radial basis, MLP or cutoff;
* without one (``radial="exact"``), the kernels compute distance, radial basis, cutoff and the
  radial MLP (the embedding's projections) per edge, recomputing them in backward.

The self loop at distance 0 always uses the exact ``distance_filter`` (``loop_filter``: with a
table attached, its float64 value at 0 taken when the table was built). Every atom-local step
runs on [N, 10, F] components (I, A as vector, S as six entries) in fused per-atom kernels:
the embedding's first tensor and its norm (:mod:`fastnnp.kernels.tensornet.atom_tensors`),
each layer's normalisation, the channel-mixing linears as one grouped GEMM
(:mod:`fastnnp.kernels.tensornet.channel_mix`), the O(3)/SO(3) products and the residual update
(:mod:`fastnnp.kernels.tensornet.interaction_update`) and the readout's invariants. Only the
embedding's norm MLP, the readout's head (on [N, F] and [N, 3F]) and the atom-type terms stay
the reference module's torch code. Parameters are constants: forces and stress, not training;
their kernel views (:meth:`TritonTensorNet.kernel_constants`) are made once per parameter
version.
"""

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from ...kernels.common.basis import kernel_basis
from ...kernels.common.radial_table import KernelTable, kernel_table
from ...kernels.tensornet.embedding_messages import DistanceProjection, embedding_messages
from ...kernels.tensornet.interaction_messages import RadialMLP, interaction_messages
from ...kernels.tensornet.atom_tensors import embedding_components, normalized, readout_invariants
from ...kernels.tensornet.channel_mix import MixWeights, channel_mix, mix_weights
from ...kernels.tensornet.interaction_update import message_products, residual_update
from ...neighbors.table import given_order
from ..common.activations import kernel_code
from ..common.triton_representation import TritonRepresentation
from .component_algebra import COMPONENT_GROUP
from .reference import Interaction, TensorEmbedding, TensorNet, loop_filter

PRECISIONS = ("ieee", "tf32")


def interaction_filter(layer: Interaction, expansion: nn.Module) -> Union[RadialMLP, KernelTable]:
    """The kernel's view of an interaction layer's radial filter: its radial table when one is
    attached (``layer.radial_table``), else the MLP."""
    if layer.radial_table is not None:
        return kernel_table(layer.radial_table)
    first, second, third = layer.linears_scalar
    return RadialMLP(
        *kernel_basis(expansion), layer.cutoff_lower, layer.cutoff_upper, kernel_code(layer.act),
        first.weight.detach(), first.bias.detach(), second.weight.detach(), second.bias.detach(),
        third.weight.detach(), third.bias.detach(),
    )


def embedding_filter(embedding: TensorEmbedding, expansion: nn.Module) -> Union[DistanceProjection, KernelTable]:
    """The kernel's view of the embedding's radial filter: its radial table when one is attached
    (``embedding.radial_table``), else the three distance projections."""
    if embedding.radial_table is not None:
        return kernel_table(embedding.radial_table)
    projections = (embedding.distance_proj1, embedding.distance_proj2, embedding.distance_proj3)
    return DistanceProjection(
        *kernel_basis(expansion), embedding.cutoff_lower, embedding.cutoff_upper,
        torch.cat([p.weight.detach() for p in projections]).contiguous(),
        torch.cat([p.bias.detach() for p in projections]).contiguous(),
    )


class TritonTensorNet(TritonRepresentation, TensorNet):
    """:class:`TensorNet` with its neighbour search and edge work on Triton kernels (float32).

    ``precision`` is the radial-MLP kernels' matmul input precision: "ieee" (exact float32,
    default) or "tf32" (opt-in; faster on NVIDIA GPUs; its error against float64 is not yet
    measured). The table kernels have no matmul, so "tf32" with every filter tabulated is refused.
    """

    def __init__(self, *args, precision: str = "ieee", **kwargs):
        super().__init__(*args, **kwargs)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.setup_kernels(layer.act for layer in (self.tensor_embedding, *self.layers))

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, None]:
        if self.precision != "ieee" and all(m.radial_table is not None for m in (self.tensor_embedding, *self.layers)):
            raise ValueError(
                f"precision={self.precision!r} sets the radial MLP kernels' matmuls, and every filter reads a "
                "radial table (no matmul): load with radial='exact' to use it, or keep precision='ieee'"
            )
        table, vec, z, batch = self.kernel_edges(z, pos, batch, box)
        charge_factor = pos.new_ones(pos.shape[0]) if q is None else 1 + 0.1 * q.to(pos.dtype)[batch]
        constants = self.kernel_constants()
        X = self._embed(z, vec, table.neighbors, table.counts, constants)
        for layer in constants.layers:
            X = normalized(X)
            features = channel_mix(X, layer.mix_in)
            messages = interaction_messages(vec, features, table.neighbors, table.counts, layer.filter, self.precision)
            products = message_products(messages, features, layer.self_loop, charge_factor, self.equivariance_invariance_group)
            X = residual_update(X, channel_mix(products, layer.mix_out), charge_factor)
        (x,) = given_order(table, self.readout_head(readout_invariants(X)))
        return x, None

    def _make_constants(self) -> "KernelConstants":
        expansion, embedding = self.distance_expansion, self.tensor_embedding
        zero = embedding.emb.weight.new_zeros(1)
        layers = tuple(
            LayerConstants(
                interaction_filter(layer, expansion), loop_filter(layer, expansion, zero).contiguous(),
                mix_weights(layer.linears_tensor[:3]), mix_weights(layer.linears_tensor[3:]),
            )
            for layer in self.layers
        )
        return KernelConstants(
            embedding_filter(embedding, expansion), loop_filter(embedding, expansion, zero)[0].contiguous(),
            mix_weights(embedding.linears_tensor), COMPONENT_GROUP.to(zero.device), layers,
        )

    def _embed(self, z: Tensor, vec: Tensor, neighbors: Tensor, counts: Tensor, constants: "KernelConstants") -> Tensor:
        """Components [N, 10, F] of the embedding's tensors X."""
        embedding = self.tensor_embedding
        z_recv, z_send = embedding.atom_terms(z)
        messages = embedding_messages(vec, z_recv, z_send, neighbors, counts, constants.embedding_filter, self.precision)
        first, norm = embedding_components(messages, z_recv + z_send, constants.embedding_loop)
        scales = embedding.tensor_scales(norm).index_select(1, constants.component_group)
        return channel_mix(first, constants.embedding_mix) * scales


class LayerConstants(NamedTuple):
    """An interaction's kernel constants: its radial filter (table or MLP), the filter at
    distance 0 [3, F], the mixing weights of its input (``linears_tensor[:3]``) and of its
    products (``linears_tensor[3:]``)."""

    filter: Union[RadialMLP, KernelTable]
    self_loop: Tensor
    mix_in: MixWeights
    mix_out: MixWeights


class KernelConstants(NamedTuple):
    """The embedding's filter, its I filter at distance 0 [F], its mixing weights, the
    component -> part index [10] and each layer's :class:`LayerConstants`."""

    embedding_filter: Union[DistanceProjection, KernelTable]
    embedding_loop: Tensor
    embedding_mix: MixWeights
    component_group: Tensor
    layers: tuple[LayerConstants, ...]
