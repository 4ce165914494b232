"""Torch references of TensorNet's kernels, for checking them in float64 (tests, benchmarks).

Each function takes the kernel's inputs (a neighbour table's edges as ``(receiver, slot,
sender)`` from :func:`table_edges`, the reference model's modules instead of the kernels'
weight tuples) and computes the kernel's output differentiably, in the inputs' dtype. The
atom-local steps are written here in TorchMD-Net's own form, on [N, 3, 3, F] tensors
(:mod:`fastnnp.models.tensornet.cartesian`), independent of the components algebra the torch
and Triton paths share (:mod:`fastnnp.models.tensornet.component_algebra`); the radial filters
are the reference model's (``distance_filter``):

* :func:`embedding_messages` - the embedding's messages summed over the edges;
* :func:`interaction_messages` - ``Interaction.distance_filter`` times the senders' features;
* :func:`message_products` - the O(3)/SO(3) products, normalised, as [N, 10, F] components;
* :func:`residual_update` - X + dX + c dX dX, as components;
* :func:`normalized` - the normalisation; ``channel_mix`` - the mixing linears (the torch
  path's ``mix_parts``, three sliced linears);
* :func:`embedding_components` - the embedding's first tensor as components, and its squared
  norm (the input of ``TensorEmbedding.tensor_scales``);
* :func:`readout_invariants` - the readout's invariants (3 I^2 | |A|^2 | |S|^2);
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
from ...models.tensornet.cartesian import (
    channel_matmul,
    compose,
    decompose,
    outer_six,
    six_to_symmetric,
    skew,
    skew_to_vector,
    squared_norm,
    symmetric_to_six,
)
from ...models.tensornet.component_algebra import COMPONENT_GROUP, mix_parts
from ...models.tensornet.reference import Interaction, TensorEmbedding

Edges = tuple[Tensor, Tensor, Tensor]
# The channel_mix kernel's reference: the torch path's three sliced linears.
channel_mix = mix_parts


def to_tensors(components: Tensor) -> Tensor:
    """Components [N, 10, F] (I, A as vector, S as six entries) -> tensors [N, 3, 3, F]."""
    return compose(components[:, 0], skew(components[:, 1:4]), six_to_symmetric(components[:, 4:]))


def to_components(X: Tensor) -> Tensor:
    """Tensors [N, 3, 3, F] -> components [N, 10, F] of their I, A and S."""
    scalar, antisym, sym = decompose(X)
    return torch.cat((scalar[:, None], skew_to_vector(antisym), symmetric_to_six(sym)), dim=1)


def table_edges(neighbors: Tensor, counts: Tensor, rows: Optional[Tensor] = None) -> Edges:
    """(receiver, slot, sender) [E] of the valid slots of a neighbour table (``neighbors``
    [N, K], ``counts`` [N]) in the receivers ``rows`` (sorted; all rows when None)."""
    if rows is None:
        rows = torch.arange(neighbors.shape[0], device=neighbors.device)
    valid = torch.arange(neighbors.shape[1], device=rows.device) < counts[rows, None].long()
    index, slot = valid.nonzero(as_tuple=True)
    receiver = rows[index]
    return receiver, slot, neighbors[receiver, slot].long()


def _embedding_messages(filters: Tensor, v: Tensor, distance: Tensor, z_recv: Tensor, z_send: Tensor, edges: Edges) -> Tensor:
    """Summed messages [N, 10, F] of the edges with radial weights ``filters`` [E, 3, F]:
    I = f_0 t, A = f_1 t u, S = f_2 t (u u^T as six entries), t = z_recv[i] + z_send[j]."""
    receiver, _, sender = edges
    unit = v / distance.clamp(min=torch.finfo(distance.dtype).tiny)[:, None]
    factors = filters * (z_recv[receiver] + z_send[sender])[:, None, :]
    messages = torch.cat(
        (factors[:, :1], factors[:, 1, None, :] * unit[:, :, None], factors[:, 2, None, :] * outer_six(unit)[:, :, None]), 1
    )
    return z_recv.new_zeros(z_recv.shape[0], 10, z_recv.shape[1]).index_add(0, receiver, messages)


def embedding_messages(
    embedding: TensorEmbedding, expansion: nn.Module, vec: Tensor, z_recv: Tensor, z_send: Tensor, edges: Edges
) -> Tensor:
    """Summed embedding messages [N, 10, F] (I, A vector, S six) to the receivers of ``edges``.

    ``vec`` [N, K, 3] the table's edge vectors, ``z_recv``/``z_send`` [N, F] the atom-type
    terms (``TensorEmbedding.atom_terms``), ``expansion`` the model's radial basis.
    """
    receiver, slot, _ = edges
    v = vec[receiver, slot]
    distance = v.norm(dim=-1)
    return _embedding_messages(embedding.distance_filter(expansion, distance), v, distance, z_recv, z_send, edges)


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
    """Normalised components [N, 10, F] of the O(3) product c (M Y + Y M) or the SO(3) product
    2 Y M (M the messages plus the self loop's, Y the features); arguments as the kernel's
    (``self_loop`` [3, F], ``charge_factor`` c [N])."""
    M = to_tensors(messages + self_loop[COMPONENT_GROUP.to(features.device)] * features)
    Y = to_tensors(features)
    if group == "O(3)":
        C = charge_factor[:, None, None, None] * (channel_matmul(M, Y) + channel_matmul(Y, M))
    else:
        C = 2 * channel_matmul(Y, M)
    return to_components(C / (squared_norm(C) + 1)[:, None, None, :])


def residual_update(X: Tensor, components: Tensor, charge_factor: Tensor) -> Tensor:
    """Components [N, 10, F] of X + dX + c dX dX, X and dX the tensors of the components ``X``
    and ``components`` [N, 10, F], c ``charge_factor`` [N]."""
    dX = to_tensors(components)
    return to_components(to_tensors(X) + dX + charge_factor[:, None, None, None] * channel_matmul(dX, dX))


def normalized(X: Tensor) -> Tensor:
    """Components [N, 10, F] divided by their tensors' squared norm + 1."""
    return X / (squared_norm(to_tensors(X)) + 1)[:, None, :]


def embedding_components(messages: Tensor, type_terms: Tensor, self_loop: Tensor) -> tuple[Tensor, Tensor]:
    """(components [N, 10, F] of the embedding's first tensor I 1 + skew(a) + S, S the
    traceless part of the outer-product entries, and its squared norm [N, F]), from the summed
    messages [N, 10, F] plus the self loop's scalar ``self_loop`` [F] x ``type_terms`` [N, F]."""
    scalar = messages[:, 0] + self_loop * type_terms
    X = compose(scalar, skew(messages[:, 1:4]), decompose(six_to_symmetric(messages[:, 4:]))[2])
    return to_components(X), squared_norm(X)


def readout_invariants(X: Tensor) -> Tensor:
    """(3 I^2 | |A|^2 | |S|^2) [N, 3F] of the tensors of components ``X`` [N, 10, F]."""
    scalar, antisym, sym = decompose(to_tensors(X))
    return torch.cat((3 * scalar**2, squared_norm(antisym), squared_norm(sym)), dim=-1)


def _table_filters(table: RadialTable, distance: Tensor) -> Tensor:
    """[P] -> [P, 3, F]: ``table`` evaluated in ``distance``'s dtype (a copy; differentiable in d)."""
    table = copy.deepcopy(table).to(distance.dtype)
    return table(distance).view(distance.shape[0], 3, -1)


def table_embedding_messages(table: RadialTable, vec: Tensor, z_recv: Tensor, z_send: Tensor, edges: Edges) -> Tensor:
    """:func:`embedding_messages` with the embedding's filter (projections x cutoff) read from ``table``."""
    receiver, slot, _ = edges
    v = vec[receiver, slot]
    distance = v.norm(dim=-1)
    return _embedding_messages(_table_filters(table, distance), v, distance, z_recv, z_send, edges)


def table_interaction_messages(table: RadialTable, vec: Tensor, features: Tensor, edges: Edges) -> Tensor:
    """:func:`interaction_messages` with the layer's filter (MLP x cutoff) read from ``table``."""
    receiver, slot, sender = edges
    filters = _table_filters(table, vec[receiver, slot].norm(dim=-1))
    group = COMPONENT_GROUP.to(features.device)
    return torch.zeros_like(features).index_add(0, receiver, filters[:, group] * features[sender])
