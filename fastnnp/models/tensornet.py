"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023) with TorchMD-Net 3.x's reference semantics.

Parameter names equal TorchMD-Net's ``representation_model.*`` state-dict keys (minus its
``distance.box`` buffer), in the current ``[N, 3, 3, F]`` layout. Per-edge work runs in
atom-aligned chunks (:mod:`fastnnp.models.edge_chunks`), so memory stays O(N·F + chunk).
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..neighbors import neighbor_list
from .activations import activation_class
from .cartesian import (
    channel_matmul,
    compose,
    decompose,
    scalar_to_tensor,
    skew,
    skew_to_vector,
    squared_norm,
)
from .edge_chunks import DEFAULT_EDGES_PER_CHUNK, edge_chunks, sum_edge_messages
from .radial import cosine_cutoff, radial_basis

GROUPS = ("O(3)", "SO(3)")


def _unit_vectors(edge_vec: Tensor, edge_weight: Tensor) -> Tensor:
    """Edge directions [E, 3]; zero for zero-length self loops (no NaN gradient)."""
    safe = torch.where(edge_weight == 0, torch.ones_like(edge_weight), edge_weight)
    return edge_vec / safe.unsqueeze(1)


class TensorEmbedding(nn.Module):
    """Initial per-atom tensors from neighbour directions, distances and atom types."""

    def __init__(self, hidden_channels, num_rbf, activation, cutoff_lower, cutoff_upper, max_z, dtype):
        super().__init__()
        F = hidden_channels
        self.hidden_channels = F
        self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper
        self.distance_proj1 = nn.Linear(num_rbf, F, dtype=dtype)
        self.distance_proj2 = nn.Linear(num_rbf, F, dtype=dtype)
        self.distance_proj3 = nn.Linear(num_rbf, F, dtype=dtype)
        self.emb = nn.Embedding(max_z, F, dtype=dtype)
        self.emb2 = nn.Linear(2 * F, F, dtype=dtype)
        self.act = activation()
        self.linears_tensor = nn.ModuleList(nn.Linear(F, F, bias=False, dtype=dtype) for _ in range(3))
        self.linears_scalar = nn.ModuleList(
            [nn.Linear(F, 2 * F, dtype=dtype), nn.Linear(2 * F, 3 * F, dtype=dtype)]
        )
        self.init_norm = nn.LayerNorm(F, dtype=dtype)

    def _messages(self, rbf_fn, atom_start, atom_end, receivers, senders, distance, unit, z_recv, z_send):
        """Per-atom sums over one chunk of edges: I [n, F], vector of A [n, 3, F], S [n, 3, 3, F]."""
        F = self.hidden_channels
        weight = torch.cat([self.distance_proj1.weight, self.distance_proj2.weight, self.distance_proj3.weight])
        bias = torch.cat([self.distance_proj1.bias, self.distance_proj2.bias, self.distance_proj3.bias])
        proj = nn.functional.linear(rbf_fn(distance), weight, bias).view(-1, 3, F)
        pair = cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper).unsqueeze(1) * (
            z_recv[receivers] + z_send[senders]
        )
        factors = pair.unsqueeze(1) * proj
        local = receivers - atom_start
        n = atom_end - atom_start
        scalar = factors.new_zeros(n, F).index_add_(0, local, factors[:, 0])
        vector = factors.new_zeros(n, 3, F).index_add_(0, local, factors[:, 1, None, :] * unit[:, :, None])
        outer = unit[:, :, None] * unit[:, None, :]
        tensor = factors.new_zeros(n, 3, 3, F).index_add_(
            0, local, factors[:, 2, None, None, :] * outer[..., None]
        )
        return scalar, vector, tensor

    def forward(self, z, chunks, edge_args, rbf_fn) -> Tensor:
        F = self.hidden_channels
        atom_emb = self.emb(z)
        z_recv = nn.functional.linear(atom_emb, self.emb2.weight[:, :F], self.emb2.bias)
        z_send = nn.functional.linear(atom_emb, self.emb2.weight[:, F:])

        def messages(*args):
            return self._messages(rbf_fn, *args)

        scalar, vector, tensor = sum_edge_messages(messages, chunks, edge_args, (z_recv, z_send))
        sym = decompose(tensor)[2]
        antisym = skew(vector)
        norm = self.init_norm(squared_norm(compose(scalar, antisym, sym)))
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        norm = norm.view(-1, 3, F)
        scalar = self.linears_tensor[0](scalar) * norm[:, 0]
        antisym = self.linears_tensor[1](antisym) * norm[:, 1, None, None, :]
        sym = self.linears_tensor[2](sym) * norm[:, 2, None, None, :]
        return compose(scalar, antisym, sym)


class Interaction(nn.Module):
    """One TensorNet message-passing layer."""

    def __init__(self, num_rbf, hidden_channels, activation, cutoff_lower, cutoff_upper, group, dtype):
        super().__init__()
        F = hidden_channels
        self.hidden_channels = F
        self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper
        self.group = group
        self.linears_scalar = nn.ModuleList(
            [nn.Linear(num_rbf, F, dtype=dtype), nn.Linear(F, 2 * F, dtype=dtype), nn.Linear(2 * F, 3 * F, dtype=dtype)]
        )
        self.linears_tensor = nn.ModuleList(nn.Linear(F, F, bias=False, dtype=dtype) for _ in range(6))
        self.act = activation()

    def _messages(self, rbf_fn, atom_start, atom_end, receivers, senders, distance, unit, scalar, vector, tensor):
        """Per-atom sums over one chunk of edges of the neighbours' weighted I, A (as vector), S."""
        factors = rbf_fn(distance)
        for linear in self.linears_scalar:
            factors = self.act(linear(factors))
        factors = factors * cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper).unsqueeze(1)
        factors = factors.view(-1, 3, self.hidden_channels)
        local = receivers - atom_start
        n = atom_end - atom_start
        out_scalar = scalar.new_zeros(n, *scalar.shape[1:]).index_add_(0, local, factors[:, 0] * scalar[senders])
        out_vector = vector.new_zeros(n, *vector.shape[1:]).index_add_(
            0, local, factors[:, 1, None, :] * vector[senders]
        )
        out_tensor = tensor.new_zeros(n, *tensor.shape[1:]).index_add_(
            0, local, factors[:, 2, None, None, :] * tensor[senders]
        )
        return out_scalar, out_vector, out_tensor

    def forward(self, X, chunks, edge_args, rbf_fn, charge_factor) -> Tensor:
        X = X / (squared_norm(X) + 1)[:, None, None, :]
        scalar, antisym, sym = decompose(X)
        scalar = self.linears_tensor[0](scalar)
        antisym = self.linears_tensor[1](antisym)
        sym = self.linears_tensor[2](sym)
        Y = compose(scalar, antisym, sym)

        def messages(*args):
            return self._messages(rbf_fn, *args)

        m_scalar, m_vector, m_sym = sum_edge_messages(
            messages, chunks, edge_args, (scalar, skew_to_vector(antisym), sym)
        )
        msg = compose(m_scalar, skew(m_vector), m_sym)
        if self.group == "O(3)":
            C = charge_factor * (channel_matmul(msg, Y) + channel_matmul(Y, msg))
        else:
            C = 2 * channel_matmul(Y, msg)
        scalar, antisym, sym = decompose(C)
        normp1 = squared_norm(C) + 1
        scalar = self.linears_tensor[3](scalar / normp1)
        antisym = self.linears_tensor[4](antisym / normp1[:, None, None, :])
        sym = self.linears_tensor[5](sym / normp1[:, None, None, :])
        dX = compose(scalar, antisym, sym)
        return X + dX + charge_factor * channel_matmul(dX, dX)


class TensorNet(nn.Module):
    """TensorNet representation: ``forward(z, pos, batch, box, q) -> (x [N, F], None)``.

    ``q`` is the total charge per system [n_systems] (0 when omitted); ``box`` None, (3, 3)
    or (n_systems, 3, 3) in the model's length unit.
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 2,
        num_rbf: int = 32,
        rbf_type: str = "expnorm",
        trainable_rbf: bool = False,
        activation: str = "silu",
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 4.5,
        max_z: int = 128,
        equivariance_invariance_group: str = "O(3)",
        dtype: torch.dtype = torch.float32,
        edges_per_chunk: int = DEFAULT_EDGES_PER_CHUNK,
    ):
        super().__init__()
        if equivariance_invariance_group not in GROUPS:
            raise ValueError(
                f"unknown equivariance_invariance_group {equivariance_invariance_group!r}; choose O(3) or SO(3)"
            )
        act = activation_class(activation)
        self.hidden_channels = hidden_channels
        self.cutoff_lower, self.cutoff_upper = float(cutoff_lower), float(cutoff_upper)
        self.equivariance_invariance_group = equivariance_invariance_group
        self.edges_per_chunk = edges_per_chunk
        self.distance_expansion = radial_basis(
            rbf_type, self.cutoff_lower, self.cutoff_upper, num_rbf, trainable_rbf, dtype
        )
        self.tensor_embedding = TensorEmbedding(
            hidden_channels, num_rbf, act, self.cutoff_lower, self.cutoff_upper, max_z, dtype
        )
        self.layers = nn.ModuleList(
            Interaction(
                num_rbf, hidden_channels, act, self.cutoff_lower, self.cutoff_upper,
                equivariance_invariance_group, dtype,
            )
            for _ in range(num_layers)
        )
        self.linear = nn.Linear(3 * hidden_channels, hidden_channels, dtype=dtype)
        self.out_norm = nn.LayerNorm(3 * hidden_channels, dtype=dtype)
        self.act = act()

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, None]:
        graph = neighbor_list(pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, loop=True)
        receivers, senders = graph.edge_index
        unit = _unit_vectors(graph.edge_vec, graph.edge_weight)
        chunks = edge_chunks(receivers, z.shape[0], self.edges_per_chunk)
        edge_args = (receivers, senders, graph.edge_weight, unit)
        atom_charge = torch.zeros_like(pos[:, 0]) if q is None else q.to(pos.dtype)[batch]
        charge_factor = (1 + 0.1 * atom_charge)[:, None, None, None]

        X = self.tensor_embedding(z, chunks, edge_args, self.distance_expansion)
        for layer in self.layers:
            X = layer(X, chunks, edge_args, self.distance_expansion, charge_factor)
        scalar, antisym, sym = decompose(X)
        features = torch.cat((3 * scalar**2, squared_norm(antisym), squared_norm(sym)), dim=-1)
        return self.act(self.linear(self.out_norm(features))), None
