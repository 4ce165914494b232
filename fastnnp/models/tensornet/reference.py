"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023) with TorchMD-Net 3.x's reference semantics.

Parameter names equal TorchMD-Net's ``representation_model.*`` state-dict keys (minus its
``distance.box`` buffer). Per-atom tensors are carried as [N, 10, F] components (I, A as a
vector, S as six entries; :mod:`fastnnp.models.tensornet.component_algebra`), the layout of the
Triton path too; TorchMD-Net's [N, 3, 3, F] formulation is the kernels' float64 reference
(:mod:`fastnnp.kernels.tensornet.reference`). The layers' per-pair work runs once per
unordered pair (:mod:`fastnnp.models.tensornet.pair_messages`,
:mod:`fastnnp.models.tensornet.pair_ops`) in cache-sized chunks, never as E x F x 9 tensors;
the embedding's messages are per-atom batched products over the receiver layout
(:mod:`fastnnp.models.tensornet.receiver_slots`): each message is an outer product of the
pair's direction terms and its radial weights, so a row's sum is one ``bmm`` per part and no
per-edge component tensor exists. When even the values autograd keeps would exceed
``memory_budget`` bytes, chunks (of pairs or of receiver rows) are recomputed in backward, so
memory stays O(N·F). Self loops (distance 0, direction 0) are handled per atom.

The steps below are shared with the Triton path
(:class:`~fastnnp.models.tensornet.triton.TritonTensorNet`); "kernel" names what Triton runs
instead, everything else runs as this torch code on both paths:

* ``TensorEmbedding.atom_terms``: atom types -> (z_recv, z_send).
* ``TensorEmbedding.distance_filter``: the radial weights; at distance 0 the self loop's (both
  paths); per pair fused into the kernel ``embedding_messages``, as is ``slot_messages``
  with its sum over each receiver's neighbours.
* ``TensorEmbedding.to_tensor``: the summed messages -> the initial X. On Triton the first
  tensor (``first_tensor``) and its squared norm are the kernel ``embedding_components``,
  ``tensor_scales`` (the norm MLP) stays torch, the linears are the kernel ``channel_mix``.
* ``Interaction.mix``: normalised X and its mixed parts (the messages' input features): kernels
  ``normalized`` and ``channel_mix``.
* ``Interaction.distance_filter``: the radial MLP; at distance 0 the self loop (both paths);
  per pair fused into the kernel ``interaction_messages``, as is ``filtered_messages``.
* ``Interaction.products``: kernel ``message_products``.
* ``Interaction.channel_mix``: the three linears on the products' parts (kernel ``channel_mix``).
* ``Interaction.residual``: kernel ``residual_update``.
* ``TensorNet.readout``: the final X -> invariant features: ``invariants`` (kernel
  ``readout_invariants``), then ``readout_head`` (torch on both paths).
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ...neighbors import neighbor_list
from ...neighbors.static import tracing
from ..common.activations import activation_class
from .atom_chunks import atoms_need_recompute, map_atoms
from . import component_algebra as ca
from .cartesian import channel_matmul, outer_six
from .pair_messages import DEFAULT_CHUNK_BYTES, HalfList, add_checkpointed_segments, recompute_segment
from .pair_ops import spread
from .receiver_slots import ReceiverSlots, edge_rows, receiver_slots
from ..common.radial import cosine_cutoff, radial_basis
from ..common.radial_table import RadialFilter, RadialTable, basis_rate, stacked_table

GROUPS = ("O(3)", "SO(3)")
# The embedding sums its messages per sender species (the type terms then multiply per-atom sums
# [T, 10, F] instead of every slot's weights [K, 3, F]) when those sums are at most this fraction
# of the slots' weights (T 10 <= fraction K 3): the bmm work grows with T. Measured (2-core CPU,
# F = 128, against per slot): water-999 (T 2, K 64) 0.90x the time, cu-500 (T 1) 0.95x,
# ethanols-576 (T 3, K ~10) 1.07x, droplet-21 (T 2, K ~25) 1.03x.
SPECIES_SUM_FRACTION = 0.25
# Up to this many pairs all filters are looked up at once (fewer ops: small systems are bound by
# per-op overhead); above it each module looks its own filter up, so that backward does not
# stack the modules' [P, 3, F] gradients into one [P, 3 x 3F] tensor.
STACKED_PAIRS = 1024


def loop_filter(module: nn.Module, rbf_fn, like: Tensor) -> Tensor:
    """``module.distance_filter`` at distance 0 [3, F] (a self loop's) in ``like``'s dtype: a
    constant of its radial table when one is attached (the filter is frozen then)."""
    if module.radial_table is None:
        return module.distance_filter(rbf_fn, like.new_zeros(1))[0]
    return module.radial_table.at_zero.view(3, module.hidden_channels)


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

    def slot_filters(self, rbf_fn, distance: Tensor, pair: Tensor, filters: Optional[Tensor]) -> tuple[Tensor, ...]:
        """The I, A and S radial weights [S, F] (three tensors: backward never assembles an
        [S, 3, F] gradient) of the slots' pairs ``pair`` [S]: gathered from ``filters`` [P, 3, F]
        when given, else from the radial table at the slots' distances, or the exact filter."""
        if filters is not None:
            return filters.index_select(0, pair).unbind(1)
        if self.radial_table is None:
            return self.distance_filter(rbf_fn, distance[pair]).unbind(1)
        return self.radial_table.grouped(distance[pair], 3)

    def distance_filter(self, rbf_fn, distance: Tensor) -> Tensor:
        """[P] -> [P, 3, F]: the I, A, S radial weights times the cosine cutoff."""
        weight = torch.cat([self.distance_proj1.weight, self.distance_proj2.weight, self.distance_proj3.weight])
        bias = torch.cat([self.distance_proj1.bias, self.distance_proj2.bias, self.distance_proj3.bias])
        proj = nn.functional.linear(rbf_fn(distance), weight, bias).view(-1, 3, self.hidden_channels)
        return proj * cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper)[:, None, None]

    def slot_messages(
        self, rbf_fn, slots: ReceiverSlots, z_recv: Tensor, unit: Tensor, distance: Tensor, species: Tensor,
        z_send: Tensor, filters: Optional[Tensor],
    ) -> Tensor:
        """Summed pair messages [n, 10, F] to n atoms from their rows of the receiver layout
        (``slots``, [n, K] each; ``z_recv`` [n, F] their receiver terms): per slot, the I, A, S
        radial weights times the type terms times (1, the unit direction to the receiver, the six
        entries of its outer product), summed over the row by one ``bmm`` per part. ``unit``
        [P, 3], ``distance`` [P] of the pairs; ``species`` [N] each atom's index into the sender
        terms ``z_send`` [T, F] of the T species present; ``filters`` as in :meth:`forward`.

        The sums run per sender species or per slot (:data:`SPECIES_SUM_FRACTION`)."""
        n, width = slots.pair.shape
        pair, sign = slots.pair.reshape(-1), slots.sign.reshape(-1)
        direction = unit[pair] * sign[:, None]
        angular = torch.cat((sign.abs()[:, None], direction, outer_six(direction)), 1).view(n, width, 10)
        weights = [w.view(n, width, w.shape[-1]) for w in self.slot_filters(rbf_fn, distance, pair, filters)]
        sender_species = species[slots.sender]
        n_species = z_send.shape[0]
        if 10 * n_species > SPECIES_SUM_FRACTION * 3 * width:
            type_terms = z_recv[:, None] + z_send[sender_species]
            parts = angular.transpose(1, 2).split(ca.PART_SIZES, 1)
            return torch.cat([torch.bmm(part, w * type_terms) for part, w in zip(parts, weights, strict=True)], 1)
        # [n, T, 10, K]: each slot's angular terms under its sender's species
        one_hot = nn.functional.one_hot(sender_species, n_species).to(angular.dtype)
        by_species = one_hot.permute(0, 2, 1)[:, :, None] * angular.transpose(1, 2)[:, None]
        type_terms = (z_recv[:, None] + z_send[None])[:, :, None]  # [n, T, 1, F]
        sums = []
        for part, w in zip(by_species.split(ca.PART_SIZES, 2), weights, strict=True):
            size = part.shape[2]
            per_species = torch.bmm(part.reshape(n, n_species * size, width), w).view(n, n_species, size, -1)
            sums.append((per_species * type_terms).sum(1))
        return torch.cat(sums, 1)

    def forward(
        self, z, pairs: HalfList, rbf_fn, memory_budget: int, recompute: bool, filters: Optional[Tensor] = None
    ) -> Tensor:
        """Components [N, 10, F] of the initial tensors; ``filters`` [P, 3, F]: the pairs' radial
        weights when already looked up (:meth:`TensorNet.stacked_filters`)."""
        F = self.hidden_channels
        n_atoms = z.shape[0]
        z_recv, z_send = self.atom_terms(z)
        unit = pairs.vec / pairs.distance.clamp(min=torch.finfo(pairs.distance.dtype).tiny)[:, None]

        def row_messages(pair, sender, sign, z_recv_rows):
            rows = ReceiverSlots(pair, sender, sign)
            return (
                self.slot_messages(rbf_fn, rows, z_recv_rows, unit, pairs.distance, species, z_send_present, filters),
            )

        if tracing():
            # static shapes: one edge a row, summed by a scatter; every atom its own species (the
            # species present are data-dependent)
            species, z_send_present = torch.arange(n_atoms, device=z.device), z_send
            rows, receiver = edge_rows(pairs.first, pairs.second, z_recv.dtype)
            (per_edge,) = row_messages(*rows, z_recv[receiver])
            messages = z_recv.new_zeros(n_atoms, 10, F).index_add(0, receiver, per_edge)
        else:
            present, species = torch.unique(z, return_inverse=True)
            z_send_present = self.atom_terms(present)[1]
            slots = receiver_slots(pairs.first, pairs.second, n_atoms, z_recv.dtype)
            # Kept for backward per slot: three radial weights, their slopes, the type terms: about 7 F values.
            width = slots.pair.shape[1]
            segment = recompute_segment(n_atoms * width, 7 * F, memory_budget)
            chunk = None if segment is None else max(1, segment // width)
            (messages,) = map_atoms(row_messages, (*slots, z_recv), segment is not None, chunk)
        scalar = loop_filter(self, rbf_fn, z_recv)[0] * (z_recv + z_send)
        messages = messages + torch.cat((scalar[:, None], z_recv.new_zeros(n_atoms, 9, F)), 1)
        (X,) = map_atoms(self.to_tensor, (messages,), recompute)
        return X

    def to_tensor(self, messages: Tensor) -> tuple[Tensor]:
        """Atom-local: summed messages [n, 10, F] (I, A as vector, outer-product entries) -> the
        components [n, 10, F] of the initial tensors X."""
        first = self.first_tensor(messages)
        scales = self.tensor_scales(ca.squared_norm(first))
        return (ca.mix_parts(first, self.linears_tensor) * ca.per_component(scales),)

    @staticmethod
    def first_tensor(messages: Tensor) -> Tensor:
        """Atom-local: summed messages [n, 10, F] -> the components of the first tensors
        (I, A = skew(vector), S the traceless part of the outer-product entries)."""
        return ca.traceless(messages)

    def tensor_scales(self, norm: Tensor) -> Tensor:
        """Atom-local: squared norms [n, F] of the first tensors -> the I, A, S scales [n, 3, F]
        of their mixed parts (layer norm, then the two linears with activations)."""
        norm = self.init_norm(norm)
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        return norm.view(-1, 3, self.hidden_channels)


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
        return (spread(filters, features, first, second, ca.PART_SIZES),)

    def mix(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Atom-local: components [n, 10, F] -> the normalised X/(|X|^2 + 1) and its mixed parts
        (the three input linears): the features the messages carry."""
        X = X / (ca.squared_norm(X) + 1)[:, None]
        return X, ca.mix_parts(X, self.linears_tensor[:3])

    @staticmethod
    def products(messages: Tensor, features: Tensor, self_loop: Tensor, charge_factor: Tensor, group: str) -> Tensor:
        """Atom-local: the normalised components [n, 10, F] of the O(3) product c (M Y + Y M)
        or the SO(3) product 2 Y M, M the summed messages plus the self loop's, Y the features.

        ``messages``, ``features`` [n, 10, F]; ``self_loop`` [3, F] the filter at distance 0;
        ``charge_factor`` c [n, 1, 1]; ``group`` "O(3)" or "SO(3)".
        """
        M = ca.to_tensors(messages + ca.per_component(self_loop) * features)
        Y = ca.to_tensors(features)
        if group == "O(3)":
            C = charge_factor * ca.to_components(channel_matmul(M, Y) + channel_matmul(Y, M))
        else:
            C = 2 * ca.to_components(channel_matmul(Y, M))
        return C / (ca.squared_norm(C) + 1)[:, None]

    def channel_mix(self, products: Tensor) -> Tensor:
        """The three bias-free channel-mixing linears on the I, A, S parts of the products [n, 10, F]."""
        return ca.mix_parts(products, self.linears_tensor[3:])

    @staticmethod
    def residual(X: Tensor, dX: Tensor, charge_factor: Tensor) -> Tensor:
        """Atom-local: components [n, 10, F] of the new X + dX + c dX dX; c ``charge_factor`` [n, 1, 1]."""
        D = ca.to_tensors(dX)
        return X + dX + charge_factor * ca.to_components(channel_matmul(D, D))

    def _update(self, X, features, messages, charge_factor, self_loop) -> tuple[Tensor]:
        """Atom-local: the new X from the old, the features and the summed messages."""
        products = self.products(messages, features, self_loop, charge_factor, self.group)
        return (self.residual(X, self.channel_mix(products), charge_factor),)

    def forward(
        self, X, pairs: HalfList, rbf_fn, charge_factor, memory_budget: int, recompute: bool,
        filters: Optional[Tensor] = None,
    ) -> Tensor:
        """The new components [N, 10, F]; ``filters`` [P, 3, F]: the pairs' radial weights when
        already looked up (:meth:`TensorNet.stacked_filters`)."""
        F = self.hidden_channels
        X, features = map_atoms(self.mix, (X,), recompute)
        self_loop = loop_filter(self, rbf_fn, X)
        # Radial MLP activations kept for backward: about 12 F values per pair.
        segment_size = recompute_segment(pairs.first.shape[0], 12 * F, memory_budget)

        def filtered_messages(first, second, distance, features):
            return self.filtered_messages(rbf_fn, first, second, distance, features)

        if filters is not None:
            messages = spread(filters, features, pairs.first, pairs.second, ca.PART_SIZES)
        elif segment_size is None:
            (messages,) = filtered_messages(pairs.first, pairs.second, pairs.distance, features)
        else:
            (messages,) = add_checkpointed_segments(
                filtered_messages, pairs, (pairs.distance,), (features,), (torch.zeros_like(features),), segment_size
            )

        def update(*per_atom):
            return self._update(*per_atom, self_loop)

        (X,) = map_atoms(update, (X, features, messages, charge_factor), recompute)
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
        # (key, the modules' radial tables side by side or None): stacked_filters' one lookup
        self._stacked: Optional[tuple] = None
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
        graph = self.neighbor_search(pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, half=True)
        pairs = HalfList(graph.edge_index[0], graph.edge_index[1], graph.edge_vec, graph.edge_weight)
        atom_charge = torch.zeros_like(pos[:, 0]) if q is None else q.to(pos.dtype)[batch]
        charge_factor = (1 + 0.1 * atom_charge)[:, None, None]
        # Per-atom values autograd keeps in a layer: about 20 tensors of 10 F each.
        recompute = atoms_need_recompute(z.shape[0], 20 * 10 * self.hidden_channels, self.memory_budget)
        filters = self.stacked_filters(pairs.distance)
        X = self.tensor_embedding(z, pairs, self.distance_expansion, self.memory_budget, recompute, filters[0])
        for layer, layer_filters in zip(self.layers, filters[1:], strict=True):
            X = layer(X, pairs, self.distance_expansion, charge_factor, self.memory_budget, recompute, layer_filters)
        (x,) = map_atoms(self.readout, (X,), recompute)
        return x, None

    def stacked_filters(self, distance: Tensor) -> list[Optional[Tensor]]:
        """The embedding's and each layer's radial weights [P, 3, F] at the pairs' ``distance``
        [P] from one lookup, when every filter has a radial table, the tables share their grid
        (:func:`~fastnnp.models.common.radial_table.stacked_table`) and there are at most
        :data:`STACKED_PAIRS` pairs (within the memory budget); else None for each (every
        module looks its own filter up, in its own chunks)."""
        modules = [self.tensor_embedding, *self.layers]
        F = self.hidden_channels
        if distance.shape[0] > STACKED_PAIRS or recompute_segment(distance.shape[0], 30 * F, self.memory_budget) is not None:
            return [None] * len(modules)
        key = tuple((id(m.radial_table), None if m.radial_table is None else m.radial_table.coefficients.data_ptr())
                    for m in modules)
        if self._stacked is None or self._stacked[0] != key:
            self._stacked = (key, stacked_table([m.radial_table for m in modules]))
        table = self._stacked[1]
        if table is None:
            return [None] * len(modules)
        return list(table(distance).view(-1, len(modules), 3, F).unbind(1))

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
        """Atom-local: invariant features [n, F] from the final components X [n, 10, F]."""
        return (self.readout_head(self.invariants(X)),)

    @staticmethod
    def invariants(X: Tensor) -> Tensor:
        """Atom-local: components X [n, 10, F] -> (3 I^2 | |A|^2 | |S|^2) [n, 3F]."""
        return ca.part_norms(X).flatten(1)

    def readout_head(self, invariants: Tensor) -> Tensor:
        """Atom-local: invariants [n, 3F] -> features [n, F] (layer norm, linear, activation)."""
        return self.act(self.linear(self.out_norm(invariants)))


def _flat_filter(module: nn.Module, expansion: nn.Module):
    """``module.distance_filter`` as [P] -> [P, 3F]."""
    return lambda distance: module.distance_filter(expansion, distance).reshape(distance.shape[0], -1)
