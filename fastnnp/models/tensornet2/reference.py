"""TensorNet2 (TorchMD-Net 3.1's ``tensornet2``, the AceFF-2.0 architecture) with TorchMD-Net's
pure-torch semantics and ``representation_model.*`` state-dict names (minus ``distance.box``).

TensorNet with partial charges: after the embedding and after every interaction layer a
:class:`~fastnnp.models.tensornet2.charges.ChargePredict` predicts ``q_dim`` equilibrated charges
per atom; each layer's radial filter takes the receiver's and the sender's charges of the
previous prediction besides the distance basis. Everything else is TensorNet's math, reused
from :mod:`fastnnp.models.tensornet.reference` (the embedding as is; the layers' normalisation,
channel mixes, products and residual), without TensorNet's total-charge factor: O(3) products
are M Y + Y M, the residual X + dX + dX dX. The readout features are TensorNet's, followed (with
``output_charges``) by every prediction's charges, [N, F + (L + 1) q_dim], for the
``ScalarPlusWeightedCoulomb`` head.

A layer's filter is no longer symmetric in the pair's ends, so it runs twice per unordered pair
(i <- j and j <- i); the first linear's basis part is computed once per pair and its charge
parts once per atom. The self loop's filter depends on the atom's charges: one per atom.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ...neighbors import neighbor_list
from ..common.activations import activation_class
from ..common.radial import cosine_cutoff, radial_basis
from ..common.radial_table import RadialFilter, basis_rate
from ..tensornet import component_algebra as ca
from ..tensornet.atom_chunks import atoms_need_recompute, map_atoms
from ..tensornet.pair_messages import DEFAULT_CHUNK_BYTES, HalfList, recompute_segment, sum_pair_messages
from ..tensornet.reference import GROUPS, Interaction, TensorEmbedding, TensorNet, _flat_filter
from .charges import ChargePredict
from .repulsion import RepulsionZBL

# Pairs per chunk of a layer's messages (both directions): small enough to stay in cache.
CACHE_CHUNK = 512


class ChargedInteraction(Interaction):
    """A TensorNet layer whose radial filter also reads the pair's charges [N, q_dim]:
    ``linears_scalar.0`` maps (basis | q_receiver | q_sender) -> F."""

    def __init__(self, num_rbf, hidden_channels, q_dim, activation, cutoff_lower, cutoff_upper, group, dtype):
        super().__init__(num_rbf, hidden_channels, activation, cutoff_lower, cutoff_upper, group, dtype)
        self.num_rbf, self.q_dim = num_rbf, q_dim
        self.linears_scalar[0] = nn.Linear(num_rbf + 2 * q_dim, hidden_channels, dtype=dtype)

    def charge_terms(self, charges: Tensor) -> tuple[Tensor, Tensor]:
        """Charges [N, q_dim] -> their parts [N, F] of the first linear as receiver and as sender."""
        weight = self.linears_scalar[0].weight
        R, q = self.num_rbf, self.q_dim
        return charges @ weight[:, R : R + q].t(), charges @ weight[:, R + q :].t()

    def basis_term(self, rbf_fn, distance: Tensor) -> Tensor:
        """[P] -> [P, F]: the first linear's basis part and its bias."""
        first = self.linears_scalar[0]
        return nn.functional.linear(rbf_fn(distance), first.weight[:, : self.num_rbf], first.bias)

    def charged_filter(self, pre_activation: Tensor, distance: Tensor) -> Tensor:
        """The rest of the radial MLP on the first linear's output [P, F], times the cosine
        cutoff at ``distance`` [P] -> [P, 3, F]."""
        factors = self.act(pre_activation)
        for linear in self.linears_scalar[1:]:
            factors = self.act(linear(factors))
        factors = factors * cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper)[:, None]
        return factors.view(-1, 3, self.hidden_channels)

    def pair_messages(self, rbf_fn, first, second, distance, features, recv, send) -> tuple[Tensor, Tensor]:
        """Messages [P, 10, F] of one chunk of pairs to ``first`` (from ``second``) and to
        ``second`` (from ``first``), each with its own direction's filter."""
        basis = self.basis_term(rbf_fn, distance)
        to_first = self.charged_filter(basis + recv[first] + send[second], distance)
        to_second = self.charged_filter(basis + recv[second] + send[first], distance)
        return (
            ca.per_component(to_first) * features[second],
            ca.per_component(to_second) * features[first],
        )

    def charged_update(self, X, features, messages, self_loop) -> tuple[Tensor]:
        """Atom-local: the new X from the normalised X, the features, the summed messages and
        the per-atom self-loop filters [n, 3, F]."""
        products = self.products(messages, features, self_loop, 1.0, self.group)
        return (self.residual(X, self.channel_mix(products), 1.0),)

    def forward(self, X, charges, pairs: HalfList, rbf_fn, memory_budget: int, recompute: bool) -> Tensor:
        F = self.hidden_channels
        X, features = map_atoms(self.mix, (X,), recompute)
        recv, send = self.charge_terms(charges)
        zero = X.new_zeros(X.shape[0])
        self_loop = self.charged_filter(self.basis_term(rbf_fn, zero) + recv + send, zero)

        def pair_messages(first, second, distance, features, recv, send):
            return self.pair_messages(rbf_fn, first, second, distance, features, recv, send)

        (messages,) = sum_pair_messages(
            pair_messages, pairs, (pairs.distance,), (features, recv, send), (torch.zeros_like(features),),
            chunk_size=CACHE_CHUNK,
            # Two directions' MLP activations and messages kept for backward: about 50 F values per pair.
            segment_size=recompute_segment(pairs.first.shape[0], 50 * F, memory_budget),
        )
        (X,) = map_atoms(self.charged_update, (X, features, messages, self_loop), recompute)
        return X


class TensorNet2(nn.Module):
    """TensorNet2 representation: ``forward(z, pos, batch, box, q) -> (x, None)``, x [N, F] or,
    with ``output_charges``, [N, F + (num_layers + 1) q_dim] (features, then the charges of the
    embedding's and each layer's prediction, in elementary charges).

    ``q`` is the total charge per system [n_systems] (0 when omitted), every prediction's
    channels sum to it per system; ``box`` None, (3, 3) or (n_systems, 3, 3) in Angstrom.
    With ``repulsion``, :attr:`extra_energy` holds the last call's per-atom ZBL energies
    [N, 1] (eV), which the potential adds to the head's output; else it is None.
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        q_dim: int = 16,
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
        output_charges: bool = False,
        repulsion: bool = False,
        memory_budget: int = DEFAULT_CHUNK_BYTES,
    ):
        super().__init__()
        if equivariance_invariance_group not in GROUPS:
            raise ValueError(
                f"unknown equivariance_invariance_group {equivariance_invariance_group!r}; choose O(3) or SO(3)"
            )
        act = activation_class(activation)
        self.hidden_channels, self.q_dim = hidden_channels, q_dim
        self.cutoff_lower, self.cutoff_upper = float(cutoff_lower), float(cutoff_upper)
        self.equivariance_invariance_group = equivariance_invariance_group
        self.output_charges = output_charges
        self.memory_budget = memory_budget
        self.neighbor_search = neighbor_list  # a fastnnp.neighbors.reuse cache may replace it
        self.distance_expansion = radial_basis(
            rbf_type, self.cutoff_lower, self.cutoff_upper, num_rbf, trainable_rbf, dtype
        )
        self.tensor_embedding = TensorEmbedding(
            hidden_channels, num_rbf, act, self.cutoff_lower, self.cutoff_upper, max_z, dtype
        )
        self.charge_predict_0 = ChargePredict(hidden_channels, activation, q_dim, dtype)
        self.layers = nn.ModuleList(
            ChargedInteraction(
                num_rbf, hidden_channels, q_dim, act, self.cutoff_lower, self.cutoff_upper,
                equivariance_invariance_group, dtype,
            )
            for _ in range(num_layers)
        )
        self.charge_predicts = nn.ModuleList(
            ChargePredict(hidden_channels, activation, q_dim, dtype) for _ in range(num_layers)
        )
        self.linear = nn.Linear(3 * hidden_channels, hidden_channels, dtype=dtype)
        self.out_norm = nn.LayerNorm(3 * hidden_channels, dtype=dtype)
        self.act = act()
        self.repulsion = RepulsionZBL(max_z, dtype) if repulsion else None
        self.extra_energy: Optional[Tensor] = None

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> tuple[Tensor, None]:
        x, charges = self.features_and_charges(z, pos, batch, box, q)
        return (torch.cat((x, charges), 1) if self.output_charges else x), None

    def predicted_charges(
        self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor] = None, q: Optional[Tensor] = None
    ) -> Tensor:
        """Every prediction's charges [N, (num_layers + 1) q_dim] (elementary charges)."""
        return self.features_and_charges(z, pos, batch, box, q)[1]

    def features_and_charges(self, z, pos, batch, box, q) -> tuple[Tensor, Tensor]:
        """Readout features [N, F] and the predictions' charges [N, (num_layers + 1) q_dim];
        sets :attr:`extra_energy`."""
        graph = self.neighbor_search(pos, batch, self.cutoff_upper, self.cutoff_lower, box=box, half=True)
        pairs = HalfList(graph.edge_index[0], graph.edge_index[1], graph.edge_vec, graph.edge_weight)
        n_systems = int(batch.max()) + 1 if batch.numel() > 0 else 0
        total = torch.zeros_like(pos[:, 0]) if q is None else q.to(pos.dtype)[batch]
        # Per-atom values autograd keeps in a layer: about 20 tensors of 10 F each.
        recompute = atoms_need_recompute(z.shape[0], 20 * 10 * self.hidden_channels, self.memory_budget)
        X = self.tensor_embedding(z, pairs, self.distance_expansion, self.memory_budget, recompute)
        predictions = [self.charge_predict_0(X, batch, total, n_systems)]
        for layer, predict in zip(self.layers, self.charge_predicts, strict=True):
            X = layer(X, predictions[-1], pairs, self.distance_expansion, self.memory_budget, recompute)
            predictions.append(predict(X, batch, total, n_systems))
        (x,) = map_atoms(self.readout, (X,), recompute)
        if self.repulsion is not None:
            self.extra_energy = self.repulsion(z, pairs.first, pairs.second, pairs.distance)
        else:
            self.extra_energy = None
        return x, torch.cat(predictions, 1)

    def radial_filters(self) -> list[RadialFilter]:
        """The embedding's pair filter, for a table (the layers' filters read charges too)."""
        rate = basis_rate(self.distance_expansion)
        return [
            RadialFilter(
                "tensor_embedding", _flat_filter(self.tensor_embedding, self.distance_expansion),
                self.cutoff_lower, self.cutoff_upper, rate, True,
            )
        ]

    readout = TensorNet.readout
    invariants = staticmethod(TensorNet.invariants)
    readout_head = TensorNet.readout_head
