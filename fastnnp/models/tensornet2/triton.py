"""TensorNet2 on Triton kernels: TensorNet's kernels wherever its filters allow, one new kernel
where a filter reads the charges.

Same parameters (and state-dict keys) as the reference :class:`TensorNet2`. Per step:

* neighbour search, edge vectors, the embedding (its filter depends on the distance only: the
  radial-table kernels when ``tensor_embedding.radial_table`` is attached, as
  :func:`fastnnp.load_model` does for ``radial="auto"`` / ``"table"``, else the exact
  projections), each layer's normalisation, channel mixes, O(3)/SO(3) products, residual update
  and the readout's invariants: TensorNet's kernels (:mod:`fastnnp.models.tensornet.triton`),
  with TensorNet2's charge factor 1;
* each layer's messages: :func:`fastnnp.kernels.tensornet2.charged_messages.charged_messages`.
  The first radial linear maps (basis | q_receiver | q_sender) -> F, so the filter depends on the
  pair's charges besides the distance: no radial table can hold it. The kernel runs the exact
  MLP per directed edge with the two per-atom charge terms (``ChargedInteraction.charge_terms``,
  [N, F] each, torch) added before the first activation, and carries the gradient into them;
* stay torch code, on per-atom tensors: the charge predictions (``ChargePredict``'s layer norm
  and MLP on (I | |A|^2 | |S|^2), the norms from the readout-invariants kernel, and the
  equilibration), the charge terms, the self-loop filter (the MLP at
  distance 0 on per-atom pre-activations, [N, 3, F]) and its product with the features, the
  embedding's norm MLP and the readout head; the optional ZBL repulsion, on the padded table
  ([N, K] values, no host sync). The Coulomb head is the output model's torch code.

Parameters are constants (forces and stress, not training); their kernel views are made once
per parameter version (:class:`~fastnnp.models.common.triton_representation.TritonRepresentation`).
"""

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from ...kernels.common.basis import kernel_basis
from ...kernels.common.radial_table import KernelTable
from ...kernels.tensornet.atom_tensors import normalized, readout_invariants
from ...kernels.tensornet.channel_mix import MixWeights, channel_mix, mix_weights
from ...kernels.tensornet.embedding_messages import DistanceProjection
from ...kernels.tensornet.interaction_messages import RadialMLP
from ...kernels.tensornet.interaction_update import message_products, residual_update
from ...kernels.tensornet2.charged_messages import charged_messages
from ...neighbors.table import given_order
from ..common.activations import kernel_code
from ..common.triton_representation import TritonRepresentation
from ..tensornet.component_algebra import COMPONENT_GROUP
from ..tensornet.reference import loop_filter
from ..tensornet.triton import PRECISIONS, TritonTensorNet, embedding_filter
from .charges import ChargePredict, equilibrate
from .reference import ChargedInteraction, TensorNet2
from .repulsion import RepulsionZBL


def charged_filter(layer: ChargedInteraction, expansion: nn.Module) -> RadialMLP:
    """The kernel's view of a layer's radial MLP: the first linear's basis columns [F, R] and
    bias (its charge columns enter as the per-atom terms), the other two linears."""
    first, second, third = layer.linears_scalar
    return RadialMLP(
        *kernel_basis(expansion), layer.cutoff_lower, layer.cutoff_upper, kernel_code(layer.act),
        first.weight.detach()[:, : layer.num_rbf].contiguous(), first.bias.detach(),
        second.weight.detach(), second.bias.detach(), third.weight.detach(), third.bias.detach(),
    )


def table_repulsion(repulsion: RepulsionZBL, z: Tensor, neighbors: Tensor, counts: Tensor, vec: Tensor) -> Tensor:
    """Per-atom ZBL energies [N, 1] (eV) from a neighbour table listing both directions of every
    pair: E_i = 1/2 sum_k directed(z_i, z_j, d_ik) over the valid slots (``vec`` [N, K, 3])."""
    valid = torch.arange(neighbors.shape[1], device=neighbors.device) < counts[:, None]
    zc = z.clamp(max=repulsion.num_elem - 1)
    # 1 Angstrom in the padding keeps the padded terms finite (they are masked out)
    distance = (vec.square().sum(-1) + (~valid).to(vec.dtype)).sqrt()
    directed = repulsion.directed(zc[:, None].expand_as(neighbors), zc[neighbors.long()], distance)
    return 0.5 * torch.where(valid, directed, 0.0).sum(1, keepdim=True)


class TritonTensorNet2(TritonRepresentation, TensorNet2):
    """:class:`TensorNet2` with its neighbour search and edge work on Triton kernels (float32).

    ``precision``: the radial-MLP kernels' matmul input precision, "ieee" (exact float32,
    default) or "tf32" (opt-in), as :class:`~fastnnp.models.tensornet.triton.TritonTensorNet`.
    """

    def __init__(self, *args, precision: str = "ieee", **kwargs):
        super().__init__(*args, **kwargs)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.setup_kernels(layer.act for layer in (self.tensor_embedding, *self.layers))

    def features_and_charges(self, z, pos, batch, box, q) -> tuple[Tensor, Tensor]:
        """Readout features [N, F] and the predictions' charges [N, (num_layers + 1) q_dim];
        sets :attr:`extra_energy`."""
        table, vec, z, batch = self.kernel_edges(z, pos, batch, box)
        n_atoms = z.shape[0]
        # Charge sums in n_atoms rows (a bound on the systems: no host read of batch.max()).
        total = pos.new_zeros(n_atoms) if q is None else q.to(pos.dtype)[batch]
        ones = pos.new_ones(n_atoms)
        constants = self.kernel_constants()
        group = constants.component_group
        X = self._embed(z, vec, table.neighbors, table.counts, constants)
        invariants = readout_invariants(X)
        predictions = [self._predict(self.charge_predict_0, X, invariants, batch, total, n_atoms)]
        for module, layer, predict in zip(self.layers, constants.layers, self.charge_predicts, strict=True):
            X = normalized(X)
            features = channel_mix(X, layer.mix_in)
            recv, send = module.charge_terms(predictions[-1])
            messages = charged_messages(vec, features, recv, send, table.neighbors, table.counts, layer.filter, self.precision)
            self_loop = module.charged_filter(layer.loop_basis + recv + send, ones.new_zeros(n_atoms))
            messages = messages + self_loop.index_select(1, group) * features
            products = message_products(messages, features, constants.no_loop, ones, self.equivariance_invariance_group)
            X = residual_update(X, channel_mix(products, layer.mix_out), ones)
            invariants = readout_invariants(X)
            predictions.append(self._predict(predict, X, invariants, batch, total, n_atoms))
        x = self.readout_head(invariants)
        charges = torch.cat(predictions, 1)
        if self.repulsion is None:
            self.extra_energy = None
            return given_order(table, x, charges)
        repulsion = table_repulsion(self.repulsion, z, table.neighbors, table.counts, vec)
        x, charges, self.extra_energy = given_order(table, x, charges, repulsion)
        return x, charges

    def _predict(self, predict: ChargePredict, X: Tensor, invariants: Tensor, batch: Tensor, total: Tensor,
                 n_rows: int) -> Tensor:
        """``predict``'s charges [N, q_dim] of components X [N, 10, F]: its MLP on (I | |A|^2 | |S|^2),
        the norms taken from the readout invariants [N, 3F] (kernel), equilibrated with ``n_rows``
        rows of per-system sums."""
        F = self.hidden_channels
        raw = predict.q_mlp(predict.q_norm(torch.cat((X[:, 0], invariants[:, F:]), 1)))
        return equilibrate(raw[:, : predict.q_dim], raw[:, predict.q_dim :], batch, total, n_rows)

    def _make_constants(self) -> "KernelConstants":
        expansion, embedding = self.distance_expansion, self.tensor_embedding
        zero = embedding.emb.weight.new_zeros(1)
        layers = tuple(
            LayerConstants(
                charged_filter(layer, expansion), layer.basis_term(expansion, zero),
                mix_weights(layer.linears_tensor[:3]), mix_weights(layer.linears_tensor[3:]),
            )
            for layer in self.layers
        )
        return KernelConstants(
            embedding_filter(embedding, expansion), loop_filter(embedding, expansion, zero)[0].contiguous(),
            mix_weights(embedding.linears_tensor), COMPONENT_GROUP.to(zero.device),
            zero.new_zeros(3, self.hidden_channels), layers,
        )

    _embed = TritonTensorNet._embed


class LayerConstants(NamedTuple):
    """A layer's kernel constants: its radial MLP, the first linear's basis part and bias at
    distance 0 [1, F] (the self loop's), the mixing weights of its input and of its products."""

    filter: RadialMLP
    loop_basis: Tensor
    mix_in: MixWeights
    mix_out: MixWeights


class KernelConstants(NamedTuple):
    """The embedding's filter, its I filter at distance 0 [F], its mixing weights, the
    component -> part index [10], a zero filter [3, F] (the products kernel's self loop: the
    per-atom one is added to the messages) and each layer's :class:`LayerConstants`."""

    embedding_filter: Union[DistanceProjection, KernelTable]
    embedding_loop: Tensor
    embedding_mix: MixWeights
    component_group: Tensor
    no_loop: Tensor
    layers: tuple[LayerConstants, ...]
