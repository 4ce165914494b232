"""Torch references of TensorNet's kernels, for checking them in float64 (tests, benchmarks).

Each function takes the kernel's inputs (a neighbour table's edges as ``(receiver, slot,
sender)`` from :func:`table_edges`, the reference model's modules instead of the kernels'
weight tuples) and computes the kernel's output with the pure-torch model's public steps
(:mod:`fastnnp.models.tensornet.reference`), differentiably, in the inputs' dtype:

* :func:`embedding_messages` - ``TensorEmbedding.pair_messages`` summed over the edges;
* :func:`interaction_messages` - ``Interaction.distance_filter`` times the senders' features;
* :func:`message_products` - ``Interaction.products`` as [N, 10, F] components;
* :func:`residual_update` - ``Interaction.residual`` of the components' tensors, as components;
* :func:`normalized`, :func:`channel_mix` - ``Interaction.mix`` on components;
* :func:`embedding_components` - ``TensorEmbedding.first_tensor`` as components, and its
  squared norm (the input of ``TensorEmbedding.tensor_scales``);
* :func:`readout_invariants` - ``TensorNet.invariants`` of components;
* :func:`table_embedding_messages`, :func:`table_interaction_messages` - the table kernels'
  references: the same messages with the radial filter read from a
  :class:`~fastnnp.models.common.radial_table.RadialTable` (its own torch lookup, evaluated in
  the inputs' dtype on the table's coefficients: float32 coefficients checked in float64), so
  only the kernels' arithmetic is tested, not the table's error against the exact filter.
"""

from typing import Optional

import copy

import torch
from torch import Tensor, nn

from ...models.common.radial_table import RadialTable
from ...models.tensornet.cartesian import compose, decompose, outer_six, squared_norm
from ...models.tensornet.reference import (
    COMPONENT_GROUP,
    COMPONENTS,
    Interaction,
    TensorEmbedding,
    TensorNet,
    features_to_tensor,
)

Edges = tuple[Tensor, Tensor, Tensor]


def table_edges(neighbors: Tensor, counts: Tensor, rows: Optional[Tensor] = None) -> Edges:
    """(receiver, slot, sender) [E] of the valid slots of a neighbour table (``neighbors``
    [N, K], ``counts`` [N]) in the receivers ``rows`` (sorted; all rows when None)."""
    if rows is None:
        rows = torch.arange(neighbors.shape[0], device=neighbors.device)
    valid = torch.arange(neighbors.shape[1], device=rows.device) < counts[rows, None].long()
    index, slot = valid.nonzero(as_tuple=True)
    receiver = rows[index]
    return receiver, slot, neighbors[receiver, slot].long()


def embedding_messages(
    embedding: TensorEmbedding, expansion: nn.Module, vec: Tensor, z_recv: Tensor, z_send: Tensor, edges: Edges
) -> Tensor:
    """Summed embedding messages [N, 10, F] (I, A vector, S six) to the receivers of ``edges``.

    ``vec`` [N, K, 3] the table's edge vectors, ``z_recv``/``z_send`` [N, F] the atom-type
    terms (``TensorEmbedding.atom_terms``), ``expansion`` the model's radial basis.
    """
    receiver, slot, sender = edges
    v = vec[receiver, slot]
    scalar, vector, outer = embedding.pair_messages(expansion, receiver, sender, v, v.norm(dim=-1), z_recv, z_send)[:3]
    messages = torch.cat((scalar[:, None], vector, outer), 1)
    return z_recv.new_zeros(z_recv.shape[0], 10, z_recv.shape[1]).index_add(0, receiver, messages)


def interaction_messages(
    layer: Interaction, expansion: nn.Module, vec: Tensor, features: Tensor, edges: Edges
) -> Tensor:
    """Filtered neighbour sums [N, 10, F] of ``features`` [N, 10, F] to the receivers of
    ``edges``, with ``vec`` [N, K, 3] the table's edge vectors."""
    receiver, slot, sender = edges
    filters = layer.distance_filter(expansion, vec[receiver, slot].norm(dim=-1))
    group = COMPONENT_GROUP.to(features.device)
    return torch.zeros_like(features).index_add(0, receiver, filters[:, group] * features[sender])


def message_products(
    messages: Tensor, features: Tensor, self_loop: Tensor, charge_factor: Tensor, group: str
) -> Tensor:
    """Normalised components [N, 10, F] of the O(3)/SO(3) product; arguments as the kernel's
    (``self_loop`` [3, F], ``charge_factor`` [N])."""
    parts = Interaction.products(
        messages, features, features_to_tensor(features), self_loop, charge_factor[:, None, None, None], group
    )
    return Interaction.features(*parts)


def _components(X: Tensor) -> Tensor:
    """Tensors [N, 3, 3, F] -> their components [N, 10, F]."""
    return Interaction.features(*decompose(X))


def residual_update(X: Tensor, components: Tensor, charge_factor: Tensor) -> Tensor:
    """Components [N, 10, F] of X + dX + c dX dX, X and dX the tensors of the components ``X``
    and ``components`` [N, 10, F], c ``charge_factor`` [N]."""
    return _components(
        Interaction.residual(features_to_tensor(X), features_to_tensor(components), charge_factor[:, None, None, None])
    )


def normalized(X: Tensor) -> Tensor:
    """Components [N, 10, F] divided by their tensors' squared norm + 1 (``Interaction.mix``'s
    normalisation)."""
    return X / (squared_norm(features_to_tensor(X)) + 1)[:, None, :]


def channel_mix(X: Tensor, linears) -> Tensor:
    """The three bias-free linears (I, A, S) on the parts of components [N, 10, F]."""
    return torch.cat([linear(X[:, part]) for linear, part in zip(linears, COMPONENTS, strict=True)], 1)


def embedding_components(messages: Tensor, type_terms: Tensor, self_loop: Tensor) -> tuple[Tensor, Tensor]:
    """(components [N, 10, F] of ``TensorEmbedding.first_tensor``, its squared norm [N, F]),
    from the summed messages [N, 10, F] plus the self loop's scalar ``self_loop`` [F] x
    ``type_terms`` [N, F]."""
    scalar = messages[:, 0] + self_loop * type_terms
    X = compose(*TensorEmbedding.first_tensor(scalar, messages[:, 1:4], messages[:, 4:]))
    return _components(X), squared_norm(X)


def readout_invariants(X: Tensor) -> Tensor:
    """``TensorNet.invariants`` [N, 3F] of the tensors of components ``X`` [N, 10, F]."""
    return TensorNet.invariants(features_to_tensor(X))


def _table_filters(table: RadialTable, distance: Tensor) -> Tensor:
    """[P] -> [P, 3, F]: ``table`` evaluated in ``distance``'s dtype (a copy; differentiable in d)."""
    table = copy.deepcopy(table).to(distance.dtype)
    return table(distance).view(distance.shape[0], 3, -1)


def table_embedding_messages(table: RadialTable, vec: Tensor, z_recv: Tensor, z_send: Tensor, edges: Edges) -> Tensor:
    """:func:`embedding_messages` with the embedding's filter (projections x cutoff) read from
    ``table``: I = P_0 t, A = P_1 t u, S = P_2 t (u u^T as six entries), t = z_recv[i] + z_send[j]."""
    receiver, slot, sender = edges
    v = vec[receiver, slot]
    distance = v.norm(dim=-1)
    unit = v / distance.clamp(min=torch.finfo(distance.dtype).tiny)[:, None]
    factors = _table_filters(table, distance) * (z_recv[receiver] + z_send[sender])[:, None, :]
    messages = torch.cat(
        (factors[:, :1], factors[:, 1, None, :] * unit[:, :, None], factors[:, 2, None, :] * outer_six(unit)[:, :, None]), 1
    )
    return z_recv.new_zeros(z_recv.shape[0], 10, z_recv.shape[1]).index_add(0, receiver, messages)


def table_interaction_messages(table: RadialTable, vec: Tensor, features: Tensor, edges: Edges) -> Tensor:
    """:func:`interaction_messages` with the layer's filter (MLP x cutoff) read from ``table``."""
    receiver, slot, sender = edges
    filters = _table_filters(table, vec[receiver, slot].norm(dim=-1))
    group = COMPONENT_GROUP.to(features.device)
    return torch.zeros_like(features).index_add(0, receiver, filters[:, group] * features[sender])
