"""Neighbour embedding shared by the Equivariant Transformer and the Graph Network.

TorchMD-Net's ``NeighborEmbedding`` (ET paper, eq. 3): every atom type has a second embedding
vector; an atom's neighbourhood embedding is the sum of its neighbours' vectors weighted by a
learned radial filter, and is mixed with the atom's own embedding by a linear layer::

    W_ij = distance_proj(rbf(d_ij)) * cutoff(d_ij)
    n_i  = sum_{j != i} W_ij * embedding(z_j)
    x_i  = combine([x_i, n_i])

Self loops never contribute. With a table of the filter attached (``radial_table``, see
:mod:`fastnnp.models.common.radial_table`) ``W_ij`` is read from it. Parameter names
(``embedding``, ``distance_proj``, ``combine``) match TorchMD-Net's state dict.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from .radial import CosineCutoff
from .radial_table import RadialTable


class NeighborEmbedding(nn.Module):
    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        cutoff_lower: float,
        cutoff_upper: float,
        max_z: int = 100,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.embedding = nn.Embedding(max_z, hidden_channels, dtype=dtype)
        self.distance_proj = nn.Linear(num_rbf, hidden_channels, dtype=dtype)
        self.combine = nn.Linear(hidden_channels * 2, hidden_channels, dtype=dtype)
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        # A fastnnp.models.common.radial_table table of distance_filter, when attached.
        self.radial_table: Optional[RadialTable] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TorchMD-Net's initialisation: normal embedding, Xavier-uniform linears, zero biases."""
        self.embedding.reset_parameters()
        for linear in (self.distance_proj, self.combine):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def distance_filter(self, edge_attr: Tensor, edge_weight: Tensor) -> Tensor:
        """``W_ij`` [P, F] from the radial basis [P, R] of the lengths [P]."""
        return self.distance_proj(edge_attr) * self.cutoff(edge_weight).unsqueeze(1)

    def pair_filter(self, edge_weight: Tensor, edge_attr: Optional[Tensor]) -> Tensor:
        """:meth:`distance_filter` of the edges: from the radial table when one is attached."""
        if self.radial_table is not None:
            return self.radial_table(edge_weight)
        assert edge_attr is not None
        return self.distance_filter(edge_attr, edge_weight)

    def forward(
        self,
        z: Tensor,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        edge_attr: Optional[Tensor],
        keep: Optional[Tensor] = None,
    ) -> Tensor:
        """``x`` [N, F] -> [N, F].

        ``edge_index[0]`` receives, ``edge_index[1]`` sends; ``edge_attr`` is the radial basis of
        ``edge_weight`` (None when a table is attached). ``keep`` [E] bool selects the edges to
        use (pass it to drop self loops); ``None`` uses every edge.
        """
        if keep is not None:
            edge_index = edge_index[:, keep]
            edge_weight = edge_weight[keep]
            edge_attr = None if edge_attr is None else edge_attr[keep]
        w = self.pair_filter(edge_weight, edge_attr)
        msg = w * self.embedding(z).index_select(0, edge_index[1])
        neighbors = torch.zeros_like(x).index_add(0, edge_index[0], msg)
        return self.combine(torch.cat([x, neighbors], dim=1))
