"""Torch reference of TensorNet2's charged interaction messages, for float64 checks.

Takes the kernel's inputs with the reference model's layer
(:class:`~fastnnp.models.tensornet2.reference.ChargedInteraction`) instead of the kernel's
weights, and computes the messages differentiably on the table's edges (``(receiver, slot,
sender)`` from :func:`fastnnp.kernels.tensornet.reference.table_edges`).
"""

import torch
from torch import Tensor, nn

from ...models.tensornet.component_algebra import COMPONENT_GROUP
from ...models.tensornet2.reference import ChargedInteraction
from ..tensornet.reference import Edges


def charged_messages(
    layer: ChargedInteraction, expansion: nn.Module, vec: Tensor, features: Tensor, recv: Tensor, send: Tensor,
    edges: Edges,
) -> Tensor:
    """Filtered neighbour sums [N, 10, F] of ``features`` [N, 10, F] to the receivers of ``edges``:
    the filter of edge i <- j is the layer's MLP on basis_term(d) + recv[i] + send[j] (``recv``,
    ``send`` [N, F]) times the cutoff; ``vec`` [N, K, 3] the table's edge vectors."""
    receiver, slot, sender = edges
    distance = vec[receiver, slot].norm(dim=-1)
    pre_activation = layer.basis_term(expansion, distance) + recv[receiver] + send[sender]
    filters = layer.charged_filter(pre_activation, distance)
    group = COMPONENT_GROUP.to(features.device)
    return torch.zeros_like(features).index_add(0, receiver, filters[:, group] * features[sender])
