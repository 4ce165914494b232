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

The self loop at distance 0 always uses the exact ``distance_filter``. After each interaction's messages,
the O(3)/SO(3) products, normalisation and residual update run as two fused per-atom kernels
(:mod:`fastnnp.kernels.tensornet.interaction_update`) around the channel-mixing GEMMs, which act on the
ten independent components instead of nine entries per part. The remaining atom-local steps
(the embedding's tensor, each layer's input normalisation and linears, the readout) are the
reference module's torch code. Parameters are constants: forces and stress, not training.
"""

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ...kernels.common.codes import RBF_CODES
from ...kernels.common.radial_table import KernelTable, kernel_table
from ...kernels.tensornet.embedding_messages import DistanceProjection, embedding_messages
from ...kernels.tensornet.interaction_messages import RadialMLP, interaction_messages
from ...kernels.tensornet.interaction_update import message_products, residual_update
from ...kernels.common.neighbor_search import table_vectors
from ...kernels.common.search_plan import PlannedTableSearch
from ..common.activations import kernel_code
from ...kernels.common.interpreter import check_triton_device
from ..common.radial import ExpNormalSmearing
from .reference import Interaction, TensorEmbedding, TensorNet

PRECISIONS = ("ieee", "tf32")
# The I, A (vector) and S (six entries) parts of the [N, 10, F] per-atom component arrays.
COMPONENTS = (slice(0, 1), slice(1, 4), slice(4, 10))


def _basis(expansion: nn.Module) -> tuple[int, Tensor, Tensor, float]:
    """(kernel code, p0 [R], p1 [R], alpha) of a radial basis module."""
    if isinstance(expansion, ExpNormalSmearing):
        return RBF_CODES["expnorm"], expansion.means.detach(), expansion.betas.detach(), expansion.alpha
    offset = expansion.offset.detach()
    return RBF_CODES["gauss"], offset, expansion.coeff.detach().expand_as(offset).contiguous(), 0.0


def interaction_filter(layer: Interaction, expansion: nn.Module) -> Union[RadialMLP, KernelTable]:
    """The kernel's view of an interaction layer's radial filter: its radial table when one is
    attached (``layer.radial_table``), else the MLP."""
    if layer.radial_table is not None:
        return kernel_table(layer.radial_table)
    first, second, third = layer.linears_scalar
    return RadialMLP(
        *_basis(expansion), layer.cutoff_lower, layer.cutoff_upper, kernel_code(layer.act),
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
        *_basis(expansion), embedding.cutoff_lower, embedding.cutoff_upper,
        torch.cat([p.weight.detach() for p in projections]).contiguous(),
        torch.cat([p.bias.detach() for p in projections]).contiguous(),
    )


class TritonTensorNet(TensorNet):
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
        # plans once per topology, then searches with no host sync; a fastnnp.neighbors.reuse cache may replace it
        self.table_search = PlannedTableSearch()
        for layer in (self.tensor_embedding, *self.layers):
            kernel_code(layer.act)

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, None]:
        if pos.dtype != torch.float32:
            raise ValueError(f"backend='triton' runs float32 only, got {pos.dtype}; use backend='torch' for float64")
        check_triton_device(pos.device)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError(
                "backend='triton' treats the parameters as constants (energies, forces, stress); "
                "freeze them with model.requires_grad_(False), or train with backend='torch'"
            )
        if self.precision != "ieee" and all(m.radial_table is not None for m in (self.tensor_embedding, *self.layers)):
            raise ValueError(
                f"precision={self.precision!r} sets the radial MLP kernels' matmuls, and every filter reads a "
                "radial table (no matmul): load with radial='exact' to use it, or keep precision='ieee'"
            )
        table = self.table_search(
            pos.detach(), batch, self.cutoff_upper, self.cutoff_lower,
            box=None if box is None else box.detach(),
        )
        vec = table_vectors(table, pos, batch, box)
        atom_charge = torch.zeros_like(pos[:, 0]) if q is None else q.to(pos.dtype)[batch]
        charge_factor = 1 + 0.1 * atom_charge
        X = self._embed(z, vec, table.neighbors, table.counts)
        for layer in self.layers:
            X, *parts = layer.mix(X)
            features = layer.features(*parts)
            self_loop = layer.distance_filter(self.distance_expansion, X.new_zeros(1))[0]
            messages = interaction_messages(
                vec, features, table.neighbors, table.counts, interaction_filter(layer, self.distance_expansion),
                self.precision,
            )
            products = message_products(messages, features, self_loop, charge_factor, self.equivariance_invariance_group)
            mixed = torch.cat(layer.channel_mix(*(products[:, part] for part in COMPONENTS)), 1)
            X = residual_update(X, mixed, charge_factor)
        return self.readout(X)[0], None

    def _embed(self, z: Tensor, vec: Tensor, neighbors: Tensor, counts: Tensor) -> Tensor:
        embedding = self.tensor_embedding
        z_recv, z_send = embedding.atom_terms(z)
        messages = embedding_messages(
            vec, z_recv, z_send, neighbors, counts, embedding_filter(embedding, self.distance_expansion), self.precision
        )
        self_loop = embedding.distance_filter(self.distance_expansion, z_recv.new_zeros(1))
        scalar = messages[:, 0] + self_loop[:, 0] * (z_recv + z_send)
        (X,) = embedding.to_tensor(scalar, messages[:, 1:4], messages[:, 4:])
        return X
