"""Equivariant Transformer (TorchMD-Net's ``TorchMD_ET``), pure torch.

Thölke & De Fabritiis, "Equivariant Transformers for Neural Network based Molecular
Potentials", ICLR 2022. Semantics are TorchMD-Net 3.1's, parameter names its state-dict keys
(without ``distance.box``: the neighbour list is not a submodule here).

Conventions (see ``fastnnp.neighbors``): for an edge ``e`` of the neighbour list the receiver
is ``i = edge_index[0]``, the sender ``j = edge_index[1]``, ``edge_vec = r_i - r_j``. The
attention uses the unit vector from the receiver to the sender,
``d_ij = (r_j - r_i) / |r_j - r_i|`` (TorchMD-Net writes the same edge as (j, i) and
normalises ``pos[j] - pos[i]``). Every atom has one self loop (d = 0, d_ij = 0), which takes
part in the attention exactly as in TorchMD-Net.

Per layer (F channels, H heads of D = F/H channels), with ``x`` [N, F] and ``vec`` [N, 3, F]::

    y = LayerNorm(x);  q, k = q_proj(y), k_proj(y)  [N, H, D];  v = v_proj(y)  [N, H, 3D]
    vec1, vec2, vec3 = split(vec_proj(vec), F);  vec_dot = sum_xyz vec1 * vec2
    dk = act(dk_proj(rbf))  [E, H, D]      (distance_influence keys/both, else 1)
    dv = act(dv_proj(rbf))  [E, H, 3D]     (distance_influence values/both, else 1)
    a_ij = attn_act(sum_D q_i k_j dk_ij)   [E, H]
    vector_cutoff False: a_ij *= cutoff(d);  True: v_j *= cutoff(d) instead
    s, u1, u2 = split(v_j * dv_ij, D)   (per head: [scalar D | vector gate D | direction D])
    m_i    = sum_j s * a_ij                                      -> [N, F]
    mvec_i = sum_j vec_j * u1 + u2 * d_ij                        -> [N, 3, F]
    o1, o2, o3 = split(o_proj(m), F)
    x   += vec_dot * o2 + o3
    vec += vec3 * o1 + mvec

and finally ``x = out_norm(x)``.

Radial filters (:meth:`EquivariantTransformer.radial_filters`, for
:mod:`fastnnp.models.common.radial_table`): per layer the concatenated ``[dk | dv]`` channels
(:meth:`EquivariantMultiHeadAttention.distance_filter`; without the cutoff, which multiplies
the attention or the values after ``attn_act``), and the neighbour embedding's
``distance_proj(rbf) * cutoff``. With a table attached a filter is read from it on every
edge. A layer's table spans [0, cutoff_upper] (its filter has no cutoff and is smooth down to
0), so the self loops (d = 0) read the table's first knot, the exact value, also when
cutoff_lower > 0. The radial basis is evaluated only when some filter has no table.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ...neighbors import neighbor_list
from ..common.checks import (
    check_choice,
    check_cutoffs,
    check_dtype,
    check_non_negative_int,
    check_positive_int,
)
from ..common.activations import activation_class
from ..common.neighbor_embedding import NeighborEmbedding
from ..common.radial import CosineCutoff, radial_basis
from ..common.radial_table import RadialFilter, RadialTable, basis_rate

DISTANCE_INFLUENCES = ("keys", "values", "both", "none")


class EquivariantMultiHeadAttention(nn.Module):
    """One ET layer; returns the updates ``(dx [N, F], dvec [N, 3, F])``."""

    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        distance_influence: str,
        num_heads: int,
        activation: str,
        attn_activation: str,
        cutoff_lower: float,
        cutoff_upper: float,
        vector_cutoff: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.num_heads = num_heads
        self.head_dim = hidden_channels // num_heads
        self.vector_cutoff = bool(vector_cutoff)
        self.layernorm = nn.LayerNorm(hidden_channels, dtype=dtype)
        self.act = activation_class(activation)()
        self.attn_activation = activation_class(attn_activation)()
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        self.q_proj = nn.Linear(hidden_channels, hidden_channels, dtype=dtype)
        self.k_proj = nn.Linear(hidden_channels, hidden_channels, dtype=dtype)
        self.v_proj = nn.Linear(hidden_channels, hidden_channels * 3, dtype=dtype)
        self.o_proj = nn.Linear(hidden_channels, hidden_channels * 3, dtype=dtype)
        self.vec_proj = nn.Linear(hidden_channels, hidden_channels * 3, bias=False, dtype=dtype)
        self.dk_proj: Optional[nn.Linear] = None
        if distance_influence in ("keys", "both"):
            self.dk_proj = nn.Linear(num_rbf, hidden_channels, dtype=dtype)
        self.dv_proj: Optional[nn.Linear] = None
        if distance_influence in ("values", "both"):
            self.dv_proj = nn.Linear(num_rbf, hidden_channels * 3, dtype=dtype)
        # A fastnnp.models.common.radial_table table of distance_filter, when attached.
        self.radial_table: Optional[RadialTable] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TorchMD-Net's initialisation: Xavier-uniform weights, zero biases."""
        self.layernorm.reset_parameters()
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.vec_proj, self.dk_proj, self.dv_proj):
            if linear is not None:
                nn.init.xavier_uniform_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    @property
    def has_filter(self) -> bool:
        """Whether the layer has distance projections (distance_influence not "none")."""
        return self.dk_proj is not None or self.dv_proj is not None

    def distance_filter(self, edge_attr: Tensor) -> Tensor:
        """Radial basis [P, R] -> [P, C]: ``act(dk_proj)`` (F channels) then ``act(dv_proj)``
        (3F), those the layer has."""
        projections = [proj for proj in (self.dk_proj, self.dv_proj) if proj is not None]
        if len(projections) == 1:
            return self.act(projections[0](edge_attr))
        weight = torch.cat([proj.weight for proj in projections])
        bias = torch.cat([proj.bias for proj in projections])
        return self.act(nn.functional.linear(edge_attr, weight, bias))

    def pair_filter(self, distance: Tensor, edge_attr: Optional[Tensor]) -> Tensor:
        """:meth:`distance_filter` of the edges [E, C]: from the radial table when one is
        attached (on [0, cutoff_upper]: self loops included), else from ``edge_attr`` [E, R]."""
        if self.radial_table is not None:
            return self.radial_table(distance)
        assert edge_attr is not None
        return self.distance_filter(edge_attr)

    def forward(
        self,
        x: Tensor,
        vec: Tensor,
        receiver: Tensor,
        sender: Tensor,
        cutoff: Tensor,
        filters: Optional[Tensor],
        direction: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``cutoff`` [E] is the cosine cutoff of the edge lengths, ``filters`` [E, C] the
        layer's :meth:`distance_filter` of them (None without distance projections),
        ``direction`` [E, 3] the unit vector from receiver to sender (0 on self loops)."""
        n, f, h, d = x.shape[0], self.hidden_channels, self.num_heads, self.head_dim
        y = self.layernorm(x)
        q = self.q_proj(y).reshape(n, h, d)
        k = self.k_proj(y).reshape(n, h, d)
        v = self.v_proj(y).reshape(n, h, 3 * d)
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), f, dim=-1)
        vec_dot = (vec1 * vec2).sum(dim=1)

        # attention weights [E, H]
        dk = dv = None
        if filters is not None:
            if self.dk_proj is not None and self.dv_proj is not None:
                dk, dv = torch.split(filters, [f, 3 * f], dim=1)
            elif self.dk_proj is not None:
                dk = filters
            else:
                dv = filters
        qk = q.index_select(0, receiver) * k.index_select(0, sender)
        if dk is not None:
            qk = qk * dk.reshape(-1, h, d)
        attn = self.attn_activation(qk.sum(dim=-1))

        v_j = v.index_select(0, sender)
        if self.vector_cutoff:
            v_j = v_j * cutoff.view(-1, 1, 1)
        else:
            attn = attn * cutoff.unsqueeze(1)
        if dv is not None:
            v_j = v_j * dv.reshape(-1, h, 3 * d)
        s, u1, u2 = torch.split(v_j, d, dim=2)

        msg_x = (s * attn.unsqueeze(2)).reshape(-1, f)
        vec_j = vec.index_select(0, sender).reshape(-1, 3, h, d)
        msg_vec = vec_j * u1.unsqueeze(1) + u2.unsqueeze(1) * direction.view(-1, 3, 1, 1)
        agg_x = torch.zeros_like(x).index_add(0, receiver, msg_x)
        agg_vec = torch.zeros_like(vec).index_add(0, receiver, msg_vec.reshape(-1, 3, f))

        o1, o2, o3 = torch.split(self.o_proj(agg_x), f, dim=1)
        dx = vec_dot * o2 + o3
        dvec = vec3 * o1.unsqueeze(1) + agg_vec
        return dx, dvec


class EquivariantTransformer(nn.Module):
    """TorchMD-Net's ``TorchMD_ET``: ``forward(z, pos, batch, box, q) -> (x [N, F], vec [N, 3, F])``.

    ``box`` is None (no periodicity), (3, 3) or (n_systems, 3, 3) rows a, b, c. ``q`` (total
    charge) is accepted for interface compatibility and unused, as in TorchMD-Net.
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 6,
        num_rbf: int = 50,
        rbf_type: str = "expnorm",
        trainable_rbf: bool = True,
        activation: str = "silu",
        attn_activation: str = "silu",
        neighbor_embedding: bool = True,
        num_heads: int = 8,
        distance_influence: str = "both",
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        max_z: int = 100,
        vector_cutoff: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        num_layers = check_non_negative_int("num_layers", num_layers)
        num_rbf = check_positive_int("num_rbf", num_rbf)
        num_heads = check_positive_int("num_heads", num_heads)
        max_z = check_positive_int("max_z", max_z)
        if hidden_channels % num_heads != 0:
            raise ValueError(
                f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})"
            )
        check_choice("distance_influence", distance_influence, DISTANCE_INFLUENCES)
        cutoff_lower, cutoff_upper = check_cutoffs(cutoff_lower, cutoff_upper)
        dtype = check_dtype(dtype)
        activation_class(activation)  # raise ValueError on unknown names
        activation_class(attn_activation)
        if rbf_type == "gauss" and num_rbf < 2:
            raise ValueError("rbf_type 'gauss' needs num_rbf >= 2")

        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.num_rbf = num_rbf
        self.rbf_type = rbf_type
        self.trainable_rbf = bool(trainable_rbf)
        self.activation = activation
        self.attn_activation = attn_activation
        self.num_heads = num_heads
        self.distance_influence = distance_influence
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper
        self.max_z = max_z
        self.vector_cutoff = bool(vector_cutoff)
        self.dtype = dtype
        self.neighbor_search = neighbor_list  # a fastnnp.neighbors.reuse cache may replace it

        self.embedding = nn.Embedding(max_z, hidden_channels, dtype=dtype)
        self.distance_expansion = radial_basis(
            rbf_type, cutoff_lower, cutoff_upper, num_rbf, trainable_rbf, dtype=dtype
        )
        self.neighbor_embedding: Optional[NeighborEmbedding] = (
            NeighborEmbedding(hidden_channels, num_rbf, cutoff_lower, cutoff_upper, max_z, dtype)
            if neighbor_embedding
            else None
        )
        self.attention_layers = nn.ModuleList(
            EquivariantMultiHeadAttention(
                hidden_channels,
                num_rbf,
                distance_influence,
                num_heads,
                activation,
                attn_activation,
                cutoff_lower,
                cutoff_upper,
                vector_cutoff,
                dtype,
            )
            for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(hidden_channels, dtype=dtype)
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        x = self.embedding(z)
        nl = self.neighbor_search(
            pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, loop=True
        )
        receiver, sender = nl.edge_index[0], nl.edge_index[1]
        # Self loops: the (i, i) pairs at zero translation. (A periodic image of the atom
        # itself, possible only in boxes smaller than TorchMD-Net allows, is a real neighbour.)
        not_loop = (receiver != sender) | (nl.image != 0).any(dim=1)
        length = torch.where(not_loop, nl.edge_weight, torch.ones_like(nl.edge_weight))
        direction = -nl.edge_vec / length.unsqueeze(1)

        # The radial basis of the edges, unless every filter reads a table.
        edge_attr: Optional[Tensor] = None
        if any(m.radial_table is None for m in self._filter_modules()):
            edge_attr = self.distance_expansion(nl.edge_weight)
        if self.neighbor_embedding is not None:
            x = self.neighbor_embedding(
                z, x, nl.edge_index, nl.edge_weight, edge_attr, keep=not_loop
            )
        cutoff = self.cutoff(nl.edge_weight)

        vec = torch.zeros(x.shape[0], 3, x.shape[1], dtype=x.dtype, device=x.device)
        for layer in self.attention_layers:
            filters = None
            if layer.has_filter:
                filters = layer.pair_filter(nl.edge_weight, edge_attr)
            dx, dvec = layer(x, vec, receiver, sender, cutoff, filters, direction)
            x = x + dx
            vec = vec + dvec
        return self.out_norm(x), vec

    def _filter_modules(self) -> list[nn.Module]:
        """The modules with a radial filter (each may take a ``radial_table``)."""
        modules: list[nn.Module] = [] if self.neighbor_embedding is None else [self.neighbor_embedding]
        return modules + [layer for layer in self.attention_layers if layer.has_filter]

    def radial_filters(self) -> list[RadialFilter]:
        """The neighbour embedding's filter (includes the cutoff, self loops excluded: a table
        on [cutoff_lower, cutoff_upper]) and each layer's ``[dk | dv]`` (no cutoff, smooth down
        to d = 0: a table on [0, cutoff_upper], so the self loops read its first knot, the
        exact value, whatever cutoff_lower)."""
        expansion, lower, upper = self.distance_expansion, self.cutoff_lower, self.cutoff_upper
        rate = basis_rate(expansion)
        filters = []
        if self.neighbor_embedding is not None:
            embedding = self.neighbor_embedding
            filters.append(RadialFilter(
                "neighbor_embedding", lambda d: embedding.distance_filter(expansion(d), d), lower, upper, rate, True,
            ))
        for k, layer in enumerate(self.attention_layers):
            if layer.has_filter:
                filters.append(RadialFilter(
                    f"attention_layers.{k}", _layer_filter(layer, expansion), 0.0, upper, rate, False,
                ))
        return filters

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, num_layers={self.num_layers}, "
            f"num_rbf={self.num_rbf}, rbf_type={self.rbf_type!r}, "
            f"trainable_rbf={self.trainable_rbf}, activation={self.activation!r}, "
            f"attn_activation={self.attn_activation!r}, num_heads={self.num_heads}, "
            f"distance_influence={self.distance_influence!r}, "
            f"cutoff_lower={self.cutoff_lower}, cutoff_upper={self.cutoff_upper}, "
            f"max_z={self.max_z}, vector_cutoff={self.vector_cutoff}, dtype={self.dtype}"
        )


def _layer_filter(layer: EquivariantMultiHeadAttention, expansion: nn.Module):
    """``layer.distance_filter`` as a function of the distance [P] -> [P, C]."""
    return lambda distance: layer.distance_filter(expansion(distance))
