"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023) with TorchMD-Net 3.x's reference semantics.

Parameter names equal TorchMD-Net's ``representation_model.*`` state-dict keys (minus its
``distance.box`` buffer), in the current ``[N, 3, 3, F]`` layout. Per-pair work runs once per
unordered pair (:mod:`fastnnp.models.tensornet.pair_messages`, :mod:`fastnnp.models.tensornet.pair_ops`) in
cache-sized chunks, never as E x F x 9 tensors; when even the E x F values autograd keeps would
exceed ``memory_budget`` bytes, chunks are recomputed in backward, so memory stays O(N·F).
Self loops (distance 0, direction 0) are handled per atom.

The steps below are the public contract shared with the Triton path
(:class:`~fastnnp.models.tensornet.triton.TritonTensorNet`) and the kernels' float64
references (:mod:`fastnnp.kernels.tensornet.reference`); "kernel" names what Triton runs
instead, everything else runs as this torch code on both paths:

* ``TensorEmbedding.atom_terms``: atom types -> (z_recv, z_send).
* ``TensorEmbedding.distance_filter``: the radial weights; at distance 0 the self loop's (both
  paths); per pair fused into the kernel ``embedding_messages``, as is ``pair_messages``
  with its half-list sum.
* ``TensorEmbedding.to_tensor``: the summed messages -> the initial X. On Triton the first
  tensor (``first_tensor``) and its squared norm are the kernel ``embedding_components``, ``tensor_scales`` (the
  norm MLP) stays torch, the linears are the kernel ``channel_mix``.
* ``Interaction.mix``, ``Interaction.features``: normalised X, its mixed parts and their
  [N, 10, F] components (I, A as vector, S as six entries), the messages' input: kernels
  ``normalized`` and ``channel_mix`` on components.
* ``Interaction.distance_filter``: the radial MLP; at distance 0 the self loop (both paths);
  per pair fused into the kernel ``interaction_messages``, as is ``filtered_messages``.
* ``Interaction.products``: kernel ``message_products``. Here the normalised products are
  returned as 3x3 parts (I, A, S) and Y is the composed mixed parts; the kernel returns the same
  values as [N, 10, F] components and composes Y from the features itself.
* ``Interaction.channel_mix``: the three linears, on the 3x3 parts here (on components, the
  kernel ``channel_mix``).
* ``compose`` of the mixed parts, then ``Interaction.residual``: kernel ``residual_update``,
  on components in and out.
* ``TensorNet.readout``: the final X -> invariant features: ``invariants`` (kernel
  ``readout_invariants``), then ``readout_head`` (torch on both paths).
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ...neighbors import neighbor_list
from ..common.activations import activation_class
from .atom_chunks import atoms_need_recompute, map_atoms
from .cartesian import (
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
from .pair_messages import (
    DEFAULT_CHUNK_BYTES,
    HalfList,
    add_checkpointed_segments,
    half_list,
    recompute_segment,
    sum_pair_messages,
)
from .pair_ops import spread
from ..common.radial import cosine_cutoff, radial_basis
from ..common.radial_table import RadialFilter, RadialTable, basis_rate

GROUPS = ("O(3)", "SO(3)")
# Per-atom message features are [I, A as vector (3), S as six entries]: their filter groups.
COMPONENT_GROUP = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 2])
# The I, A (vector) and S (six entries) parts of the [N, 10, F] per-atom component arrays.
COMPONENTS = (slice(0, 1), slice(1, 4), slice(4, 10))
# Pairs per chunk of the embedding's messages: small enough for the chunk to stay in cache.
CACHE_CHUNK = 1024


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
        # A fastnnp.models.common.radial_table table of distance_filter, when attached.
        self.radial_table: Optional[RadialTable] = None

    def atom_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Atom types [N] -> (z_recv, z_send) [N, F]: the receiver's and the sender's halves of
        ``emb2`` on the type embedding (the bias goes with the receiver)."""
        F = self.hidden_channels
        atom_emb = self.emb(z)
        z_recv = nn.functional.linear(atom_emb, self.emb2.weight[:, :F], self.emb2.bias)
        z_send = nn.functional.linear(atom_emb, self.emb2.weight[:, F:])
        return z_recv, z_send

    def pair_filter(self, rbf_fn, distance: Tensor) -> Tensor:
        """:meth:`distance_filter` of the pairs: from the radial table when one is attached."""
        if self.radial_table is None:
            return self.distance_filter(rbf_fn, distance)
        return self.radial_table(distance).view(-1, 3, self.hidden_channels)

    def distance_filter(self, rbf_fn, distance: Tensor) -> Tensor:
        """[P] -> [P, 3, F]: the I, A, S radial weights times the cosine cutoff."""
        weight = torch.cat([self.distance_proj1.weight, self.distance_proj2.weight, self.distance_proj3.weight])
        bias = torch.cat([self.distance_proj1.bias, self.distance_proj2.bias, self.distance_proj3.bias])
        proj = nn.functional.linear(rbf_fn(distance), weight, bias).view(-1, 3, self.hidden_channels)
        return proj * cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper)[:, None, None]

    def pair_messages(self, rbf_fn, first, second, vec, distance, z_recv, z_send):
        """Messages of one chunk of pairs, to ``first`` then to ``second``: I [P, F],
        A as vector [P, 3, F] and the six entries of the direction outer product [P, 6, F]."""
        radial = self.pair_filter(rbf_fn, distance)
        unit = vec / distance.clamp(min=torch.finfo(distance.dtype).tiny)[:, None]
        outer = outer_six(unit)[:, :, None]
        messages = []
        for receiver, sender, direction in ((first, second, unit), (second, first, -unit)):
            factors = radial * (z_recv[receiver] + z_send[sender])[:, None, :]
            messages += [factors[:, 0], factors[:, 1, None, :] * direction[:, :, None], factors[:, 2, None, :] * outer]
        return tuple(messages)

    def forward(self, z, pairs: HalfList, rbf_fn, memory_budget: int, recompute: bool) -> Tensor:
        F = self.hidden_channels
        z_recv, z_send = self.atom_terms(z)
        self_loop = self.distance_filter(rbf_fn, z_recv.new_zeros(1))
        scalar = self_loop[:, 0] * (z_recv + z_send)
        vector = z_recv.new_zeros(len(z), 3, F)
        outer = z_recv.new_zeros(len(z), 6, F)

        def messages(*args):
            return self.pair_messages(rbf_fn, *args)

        scalar, vector, outer = sum_pair_messages(
            messages, pairs, (pairs.vec, pairs.distance), (z_recv, z_send), (scalar, vector, outer),
            chunk_size=CACHE_CHUNK,
            # Radial weights and pair factors kept for backward: about 16 F values per pair.
            segment_size=recompute_segment(pairs.first.shape[0], 16 * F, memory_budget),
        )
        (X,) = map_atoms(self.to_tensor, (scalar, vector, outer), recompute)
        return X

    def to_tensor(self, scalar: Tensor, vector: Tensor, outer: Tensor) -> tuple[Tensor]:
        """Atom-local: summed messages I [n, F], A as vector [n, 3, F], outer-product entries
        [n, 6, F] -> the initial tensor X [n, 3, 3, F]."""
        scalar, antisym, sym = self.first_tensor(scalar, vector, outer)
        norm = self.tensor_scales(squared_norm(compose(scalar, antisym, sym)))
        scalar = self.linears_tensor[0](scalar) * norm[:, 0]
        antisym = self.linears_tensor[1](antisym) * norm[:, 1, None, None, :]
        sym = self.linears_tensor[2](sym) * norm[:, 2, None, None, :]
        return (compose(scalar, antisym, sym),)

    @staticmethod
    def first_tensor(scalar: Tensor, vector: Tensor, outer: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Atom-local: summed messages -> the parts I [n, F], A, S [n, 3, 3, F] of the first
        tensor (A = skew(vector), S the traceless part of the outer-product entries)."""
        return scalar, skew(vector), decompose(six_to_symmetric(outer))[2]

    def tensor_scales(self, norm: Tensor) -> Tensor:
        """Atom-local: squared norms [n, F] of the first tensors -> the I, A, S scales [n, 3, F]
        of their mixed parts (layer norm, then the two linears with activations)."""
        norm = self.init_norm(norm)
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        return norm.view(-1, 3, self.hidden_channels)


def features_to_tensor(features: Tensor) -> Tensor:
    """Inverse of :meth:`Interaction.features`: components [n, 10, F] -> tensors [n, 3, 3, F]."""
    return compose(features[:, 0], skew(features[:, 1:4]), six_to_symmetric(features[:, 4:]))


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
        # A fastnnp.models.common.radial_table table of distance_filter, when attached.
        self.radial_table: Optional[RadialTable] = None

    def pair_filter(self, rbf_fn, distance: Tensor) -> Tensor:
        """:meth:`distance_filter` of the pairs: from the radial table when one is attached."""
        if self.radial_table is None:
            return self.distance_filter(rbf_fn, distance)
        return self.radial_table(distance).view(-1, 3, self.hidden_channels)

    def distance_filter(self, rbf_fn, distance: Tensor) -> Tensor:
        """[P] -> [P, 3, F]: the radial MLP times the cosine cutoff."""
        factors = rbf_fn(distance)
        for linear in self.linears_scalar:
            factors = self.act(linear(factors))
        factors = factors * cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper)[:, None]
        return factors.view(-1, 3, self.hidden_channels)

    def filtered_messages(self, rbf_fn, first, second, distance, features) -> tuple[Tensor]:
        """Neighbour features [N, 10, F] spread over the pairs ``first``, ``second`` [P] (both
        directions) with this layer's radial filter at ``distance`` [P]."""
        filters = self.pair_filter(rbf_fn, distance)
        return (spread(filters, features, first, second, COMPONENT_GROUP.to(features.device)),)

    def mix(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Atom-local: normalised X [n, 3, 3, F] and its mixed parts I [n, F], A, S [n, 3, 3, F]."""
        X = X / (squared_norm(X) + 1)[:, None, None, :]
        scalar, antisym, sym = decompose(X)
        return X, self.linears_tensor[0](scalar), self.linears_tensor[1](antisym), self.linears_tensor[2](sym)

    @staticmethod
    def features(scalar: Tensor, antisym: Tensor, sym: Tensor) -> Tensor:
        """Parts I [n, F], A, S [n, 3, 3, F] -> components [n, 10, F]: I, A as vector, S as six entries."""
        return torch.cat((scalar[:, None], skew_to_vector(antisym), symmetric_to_six(sym)), dim=1)

    @staticmethod
    def products(
        messages: Tensor, features: Tensor, Y: Tensor, self_loop: Tensor, charge_factor: Tensor, group: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Atom-local: the normalised parts I [n, F], A, S [n, 3, 3, F] of the O(3)/SO(3)
        product of the summed messages (plus the self loop's) and the features.

        ``messages``, ``features`` [n, 10, F]; ``Y`` [n, 3, 3, F] the features as tensors (the
        composed parts of :meth:`mix`); ``self_loop`` [3, F] the filter at distance 0;
        ``charge_factor`` [n, 1, 1, 1]; ``group`` "O(3)" or "SO(3)".
        """
        messages = messages + self_loop[COMPONENT_GROUP.to(features.device)] * features
        msg = features_to_tensor(messages)
        if group == "O(3)":
            C = charge_factor * (channel_matmul(msg, Y) + channel_matmul(Y, msg))
        else:
            C = 2 * channel_matmul(Y, msg)
        scalar, antisym, sym = decompose(C)
        normp1 = squared_norm(C) + 1
        return scalar / normp1, antisym / normp1[:, None, None, :], sym / normp1[:, None, None, :]

    def channel_mix(self, scalar: Tensor, antisym: Tensor, sym: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three bias-free channel-mixing linears on the I, A, S parts of a product, in any
        layout with channels last (3x3 parts here, [n, 1 | 3 | 6, F] components on Triton)."""
        return self.linears_tensor[3](scalar), self.linears_tensor[4](antisym), self.linears_tensor[5](sym)

    @staticmethod
    def residual(X: Tensor, dX: Tensor, charge_factor: Tensor) -> Tensor:
        """Atom-local: the new X + dX + c dX dX [n, 3, 3, F]; ``charge_factor`` c [n, 1, 1, 1]."""
        return X + dX + charge_factor * channel_matmul(dX, dX)

    def _prepare(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Atom-local: normalised X, Y = its mixed parts as tensors, and the message features."""
        X, scalar, antisym, sym = self.mix(X)
        return X, compose(scalar, antisym, sym), self.features(scalar, antisym, sym)

    def _update(self, X, Y, features, messages, charge_factor, self_loop) -> tuple[Tensor]:
        """Atom-local: the new X from the old, Y, the features and the summed messages."""
        parts = self.products(messages, features, Y, self_loop, charge_factor, self.group)
        dX = compose(*self.channel_mix(*parts))
        return (self.residual(X, dX, charge_factor),)

    def forward(self, X, pairs: HalfList, rbf_fn, charge_factor, memory_budget: int, recompute: bool) -> Tensor:
        F = self.hidden_channels
        X, Y, features = map_atoms(self._prepare, (X,), recompute)
        self_loop = self.distance_filter(rbf_fn, X.new_zeros(1))[0]
        # Radial MLP activations kept for backward: about 12 F values per pair.
        segment_size = recompute_segment(pairs.first.shape[0], 12 * F, memory_budget)

        def filtered_messages(first, second, distance, features):
            return self.filtered_messages(rbf_fn, first, second, distance, features)

        if segment_size is None:
            (messages,) = filtered_messages(pairs.first, pairs.second, pairs.distance, features)
        else:
            (messages,) = add_checkpointed_segments(
                filtered_messages, pairs, (pairs.distance,), (features,), (torch.zeros_like(features),), segment_size
            )

        def update(*per_atom):
            return self._update(*per_atom, self_loop)

        (X,) = map_atoms(update, (X, Y, features, messages, charge_factor), recompute)
        return X


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
        memory_budget: int = DEFAULT_CHUNK_BYTES,
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
        self.memory_budget = memory_budget
        self.neighbor_search = neighbor_list  # a fastnnp.neighbors.reuse cache may replace it
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
        graph = self.neighbor_search(pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, loop=False)
        pairs = half_list(graph)
        atom_charge = torch.zeros_like(pos[:, 0]) if q is None else q.to(pos.dtype)[batch]
        charge_factor = (1 + 0.1 * atom_charge)[:, None, None, None]
        # Per-atom values autograd keeps in a layer: about 24 tensors of 9 F each.
        recompute = atoms_need_recompute(z.shape[0], 24 * 9 * self.hidden_channels, self.memory_budget)
        X = self.tensor_embedding(z, pairs, self.distance_expansion, self.memory_budget, recompute)
        for layer in self.layers:
            X = layer(X, pairs, self.distance_expansion, charge_factor, self.memory_budget, recompute)
        (x,) = map_atoms(self.readout, (X,), recompute)
        return x, None

    def radial_filters(self) -> list[RadialFilter]:
        """The embedding's and each layer's pair filter, for tables (both include the cutoff)."""
        rate = basis_rate(self.distance_expansion)
        modules = [("tensor_embedding", self.tensor_embedding)] + [(f"layers.{k}", m) for k, m in enumerate(self.layers)]
        return [
            RadialFilter(
                path, _flat_filter(module, self.distance_expansion), self.cutoff_lower, self.cutoff_upper, rate, True
            )
            for path, module in modules
        ]

    def readout(self, X: Tensor) -> tuple[Tensor]:
        """Atom-local: invariant features [n, F] from the final tensors X [n, 3, 3, F]."""
        return (self.readout_head(self.invariants(X)),)

    @staticmethod
    def invariants(X: Tensor) -> Tensor:
        """Atom-local: tensors X [n, 3, 3, F] -> (3 I^2 | |A|^2 | |S|^2) [n, 3F]."""
        scalar, antisym, sym = decompose(X)
        return torch.cat((3 * scalar**2, squared_norm(antisym), squared_norm(sym)), dim=-1)

    def readout_head(self, invariants: Tensor) -> Tensor:
        """Atom-local: invariants [n, 3F] -> features [n, F] (layer norm, linear, activation)."""
        return self.act(self.linear(self.out_norm(invariants)))


def _flat_filter(module: nn.Module, expansion: nn.Module):
    """``module.distance_filter`` as [P] -> [P, 3F]."""
    return lambda distance: module.distance_filter(expansion, distance).reshape(distance.shape[0], -1)
