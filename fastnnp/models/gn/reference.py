"""Graph Network (TorchMD-Net's ``TorchMD_GN``, a SchNet variant), pure torch.

Semantics are TorchMD-Net 3.1's, parameter names its state-dict keys (without
``distance.box``). No self loops. Per interaction block, with receiver
``i = edge_index[0]`` and sender ``j = edge_index[1]``::

    W_ij = net(rbf(d_ij)) * cutoff(d_ij)          net = Linear(R, Fi), act, Linear(Fi, Fi)
    m_i  = aggr_j W_ij * lin1(x)_j                 aggr = add | mean | max
    x   += lin(act(lin2(m)))

``mean``/``max`` are TorchMD-Net 3.x's ``scatter``: the reduction includes the zero the output
starts from, so ``mean`` divides by (number of neighbours + 1) and ``max`` is never negative
(an atom without neighbours gets 0). Checkpoints trained before 2023-11 with torch_scatter used
true mean/max; TorchMD-Net 3.x (and this module) evaluates them with the quirk.

The filter network is one module registered twice, as TorchMD-Net does: its tensors appear
in the state dict both as ``interactions.{l}.mlp.{0,2}.*`` and
``interactions.{l}.conv.net.{0,2}.*``.

Radial filters (:meth:`GraphNetwork.radial_filters`, for :mod:`fastnnp.models.common.radial_table`):
each interaction's ``W_ij`` (:meth:`CFConv.distance_filter`, table on ``interactions.{l}.conv``)
and the neighbour embedding's ``distance_proj(rbf) * cutoff``, both including the cutoff. With
tables attached the radial basis is evaluated only when some filter has no table.
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
from ..common.scatter import scatter

AGGREGATIONS = ("add", "mean", "max")


class CFConv(nn.Module):
    """Continuous-filter convolution: ``lin2(aggr_j net(rbf_ij) cutoff_ij lin1(x)_j)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_filters: int,
        net: nn.Module,
        cutoff_lower: float,
        cutoff_upper: float,
        aggr: str = "add",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.lin1 = nn.Linear(in_channels, num_filters, bias=False, dtype=dtype)
        self.lin2 = nn.Linear(num_filters, out_channels, dtype=dtype)
        self.net = net
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        self.aggr = aggr
        # A fastnnp.models.common.radial_table table of distance_filter, when attached.
        self.radial_table: Optional[RadialTable] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TorchMD-Net's initialisation: Xavier-uniform weights, zero bias."""
        nn.init.xavier_uniform_(self.lin1.weight)
        nn.init.xavier_uniform_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def distance_filter(self, edge_attr: Tensor, edge_weight: Tensor) -> Tensor:
        """``W_ij`` [P, Fi] from the radial basis [P, R] of the lengths [P]."""
        return self.net(edge_attr) * self.cutoff(edge_weight).unsqueeze(1)

    def pair_filter(self, edge_weight: Tensor, edge_attr: Optional[Tensor]) -> Tensor:
        """:meth:`distance_filter` of the edges: from the radial table when one is attached."""
        if self.radial_table is not None:
            return self.radial_table(edge_weight)
        assert edge_attr is not None
        return self.distance_filter(edge_attr, edge_weight)

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_weight: Tensor, edge_attr: Optional[Tensor]
    ) -> Tensor:
        w = self.pair_filter(edge_weight, edge_attr)
        msg = w * self.lin1(x).index_select(0, edge_index[1])
        return self.lin2(scatter(msg, edge_index[0], x.shape[0], self.aggr))


class InteractionBlock(nn.Module):
    """``lin(act(CFConv(x)))``; the filter network ``mlp`` is shared with ``conv.net``."""

    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        num_filters: int,
        activation: str,
        cutoff_lower: float,
        cutoff_upper: float,
        aggr: str = "add",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        act_class = activation_class(activation)
        self.mlp = nn.Sequential(
            nn.Linear(num_rbf, num_filters, dtype=dtype),
            act_class(),
            nn.Linear(num_filters, num_filters, dtype=dtype),
        )
        self.conv = CFConv(
            hidden_channels, hidden_channels, num_filters, self.mlp,
            cutoff_lower, cutoff_upper, aggr=aggr, dtype=dtype,
        )
        self.act = act_class()
        self.lin = nn.Linear(hidden_channels, hidden_channels, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TorchMD-Net's initialisation: Xavier-uniform weights, zero biases."""
        for linear in (self.mlp[0], self.mlp[2], self.lin):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.conv.reset_parameters()

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_weight: Tensor, edge_attr: Optional[Tensor]
    ) -> Tensor:
        return self.lin(self.act(self.conv(x, edge_index, edge_weight, edge_attr)))


class GraphNetwork(nn.Module):
    """TorchMD-Net's ``TorchMD_GN``: ``forward(z, pos, batch, box, q) -> (x [N, F], None)``.

    ``box`` is None (no periodicity), (3, 3) or (n_systems, 3, 3) rows a, b, c. ``q`` (total
    charge) is accepted for interface compatibility and unused, as in TorchMD-Net.
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_filters: int = 128,
        num_layers: int = 6,
        num_rbf: int = 50,
        rbf_type: str = "gauss",
        trainable_rbf: bool = True,
        activation: str = "silu",
        neighbor_embedding: bool = True,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        max_z: int = 100,
        aggr: str = "add",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        num_filters = check_positive_int("num_filters", num_filters)
        num_layers = check_non_negative_int("num_layers", num_layers)
        num_rbf = check_positive_int("num_rbf", num_rbf)
        max_z = check_positive_int("max_z", max_z)
        check_choice("aggr", aggr, AGGREGATIONS)
        cutoff_lower, cutoff_upper = check_cutoffs(cutoff_lower, cutoff_upper)
        dtype = check_dtype(dtype)
        activation_class(activation)  # raise ValueError on unknown names
        if rbf_type == "gauss" and num_rbf < 2:
            raise ValueError("rbf_type 'gauss' needs num_rbf >= 2")

        self.hidden_channels = hidden_channels
        self.num_filters = num_filters
        self.num_layers = num_layers
        self.num_rbf = num_rbf
        self.rbf_type = rbf_type
        self.trainable_rbf = bool(trainable_rbf)
        self.activation = activation
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper
        self.max_z = max_z
        self.aggr = aggr
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
        self.interactions = nn.ModuleList(
            InteractionBlock(
                hidden_channels, num_rbf, num_filters, activation,
                cutoff_lower, cutoff_upper, aggr=aggr, dtype=dtype,
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
    ) -> tuple[Tensor, None]:
        x = self.embedding(z)
        nl = self.neighbor_search(
            pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, loop=False
        )
        # The radial basis of the edges, unless every filter reads a table.
        edge_attr: Optional[Tensor] = None
        if any(m.radial_table is None for m in self._filter_modules()):
            edge_attr = self.distance_expansion(nl.edge_weight)
        if self.neighbor_embedding is not None:
            x = self.neighbor_embedding(z, x, nl.edge_index, nl.edge_weight, edge_attr)
        for interaction in self.interactions:
            x = x + interaction(x, nl.edge_index, nl.edge_weight, edge_attr)
        return x, None

    def _filter_modules(self) -> list[nn.Module]:
        """The modules with a radial filter (each may take a ``radial_table``)."""
        modules: list[nn.Module] = [] if self.neighbor_embedding is None else [self.neighbor_embedding]
        return modules + [interaction.conv for interaction in self.interactions]

    def radial_filters(self) -> list[RadialFilter]:
        """The neighbour embedding's and each interaction's filter (both include the cutoff),
        for tables on [cutoff_lower, cutoff_upper]."""
        expansion = self.distance_expansion
        rate = basis_rate(expansion)
        paths = ([] if self.neighbor_embedding is None else ["neighbor_embedding"]) + [
            f"interactions.{k}.conv" for k in range(len(self.interactions))
        ]
        return [
            RadialFilter(path, _filter(self.get_submodule(path), expansion), self.cutoff_lower, self.cutoff_upper, rate, True)
            for path in paths
        ]

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, num_filters={self.num_filters}, "
            f"num_layers={self.num_layers}, num_rbf={self.num_rbf}, "
            f"rbf_type={self.rbf_type!r}, trainable_rbf={self.trainable_rbf}, "
            f"activation={self.activation!r}, cutoff_lower={self.cutoff_lower}, "
            f"cutoff_upper={self.cutoff_upper}, max_z={self.max_z}, aggr={self.aggr!r}, "
            f"dtype={self.dtype}"
        )


def _filter(module: nn.Module, expansion: nn.Module):
    """``module.distance_filter`` as a function of the distance [P] -> [P, C]."""
    return lambda distance: module.distance_filter(expansion(distance), distance)
