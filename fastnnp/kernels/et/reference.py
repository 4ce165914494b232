"""Torch reference of the ET attention-message kernel, for checking it in float64 (tests).

:func:`attention_messages` takes the kernel's inputs (atom features, the table's edge vectors
and its ``(receiver, slot, sender)`` edges from
:func:`fastnnp.kernels.tensornet.reference.table_edges`) and the reference layer module
(:class:`~fastnnp.models.et.reference.EquivariantMultiHeadAttention`, whose ``pair_filter``
gives the distance filter: exact, or read from its radial table in the inputs' dtype) and
computes m [N, F] and mvec [N, 3, F] differentiably in the inputs' dtype, written from the
layer's formulas (module docstring of :mod:`fastnnp.models.et.reference`) with the self loops
appended as edges at distance 0.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ...models.et.reference import EquivariantMultiHeadAttention

Edges = tuple[Tensor, Tensor, Tensor]


def _filters(layer: EquivariantMultiHeadAttention, expansion: nn.Module, distance: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(dk [E, F] or None, dv [E, 3F] or None) of the layer at ``distance`` [E]."""
    if not layer.has_filter:
        return None, None
    attr = None if layer.radial_table is not None else expansion(distance)
    filters = layer.pair_filter(distance, attr)
    f = layer.hidden_channels
    if layer.dk_proj is not None and layer.dv_proj is not None:
        return filters[:, :f], filters[:, f:]
    return (filters, None) if layer.dk_proj is not None else (None, filters)


def attention_messages(
    layer: EquivariantMultiHeadAttention, expansion: nn.Module, q: Tensor, k: Tensor, v: Tensor,
    vectors: Tensor, edge_vec: Tensor, edges: Edges,
) -> tuple[Tensor, Tensor]:
    """(m [N, F], mvec [N, 3, F]) of queries/keys ``q``, ``k`` [N, F], values ``v`` [N, 3F] and
    vector features ``vectors`` [N, 3, F], over the table edges and one self loop per atom;
    ``edge_vec`` [N, K, 3] (r_i - r_j per slot)."""
    n, f = q.shape
    h, d = layer.num_heads, layer.head_dim
    receiver, slot, sender = edges
    atoms = torch.arange(n, device=q.device)
    e = edge_vec[receiver, slot]
    length = e.norm(dim=1)
    zero = length.new_zeros(n)
    receiver = torch.cat([receiver, atoms])
    sender = torch.cat([sender, atoms])
    distance = torch.cat([length, zero])
    direction = torch.cat([-e / length[:, None], zero[:, None].expand(n, 3)])
    dk, dv = _filters(layer, expansion, distance)
    cutoff = layer.cutoff(distance)

    qk = (q[receiver] * k[sender]).reshape(-1, h, d)
    if dk is not None:
        qk = qk * dk.reshape(-1, h, d)
    attn = layer.attn_activation(qk.sum(-1))
    v_j = v[sender].reshape(-1, h, 3 * d)
    if layer.vector_cutoff:
        v_j = v_j * cutoff[:, None, None]
    else:
        attn = attn * cutoff[:, None]
    if dv is not None:
        v_j = v_j * dv.reshape(-1, h, 3 * d)
    s, u1, u2 = torch.split(v_j, d, dim=2)
    msg = (s * attn[:, :, None]).reshape(-1, f)
    msg_vec = vectors[sender].reshape(-1, 3, h, d) * u1[:, None] + u2[:, None] * direction[:, :, None, None]
    m = q.new_zeros(n, f).index_add(0, receiver, msg)
    mvec = q.new_zeros(n, 3, f).index_add(0, receiver, msg_vec.reshape(-1, 3, f))
    return m, mvec
