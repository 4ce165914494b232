"""TensorNet2's per-atom partial charges: predicted from the tensor features, then equilibrated
so that every channel of every system sums to its total charge (AIMNet2's neutral charge
equilibration), with TorchMD-Net 3.1's ``ChargePredict`` semantics and state-dict names
(``q_norm``, ``q_mlp.layers.{0,2}``)."""

import torch
from torch import Tensor, nn

from ..common.mlp import MLP
from ..tensornet import component_algebra as ca

# Added to each system's sum of squared weights f^2 (TorchMD-Net's constant).
QEQ_EPSILON = 1.0e-6


def equilibrate(charges: Tensor, weights: Tensor, batch: Tensor, total: Tensor, n_systems: int) -> Tensor:
    """Charges [N, C] moved so each channel of each system sums to the atoms' system charge.

    ``q_i + f_i^2 / (sum_sys f^2 + eps) * (Q - sum_sys q)``: ``weights`` f [N, C], ``batch``
    [N], ``total`` Q per atom [N] (its system's total charge, elementary charges). The sums
    reach Q up to the relative ``eps / sum f^2``.
    """
    squared = weights * weights
    per_system = squared.new_zeros(n_systems, squared.shape[1])
    weight_sums = per_system.index_add(0, batch, squared) + QEQ_EPSILON
    charge_sums = per_system.index_add(0, batch, charges)
    missing = total.to(charges.dtype)[:, None] - charge_sums[batch]
    return charges + squared / weight_sums[batch] * missing


class ChargePredict(nn.Module):
    """Partial charges [N, q_dim] from tensor components X [N, 10, F]: layer norm and a
    one-hidden-layer MLP on (I | |A|^2 | |S|^2) give raw charges and their weights f,
    then :func:`equilibrate`."""

    def __init__(self, hidden_channels: int, activation: str, q_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.q_dim = q_dim
        self.q_norm = nn.LayerNorm(3 * hidden_channels, dtype=dtype)
        self.q_mlp = MLP(3 * hidden_channels, 2 * q_dim, hidden_channels, activation, 1, dtype=dtype)

    def forward(self, X: Tensor, batch: Tensor, total: Tensor, n_systems: int) -> Tensor:
        norms = ca.part_norms(X)
        features = torch.cat((X[:, 0], norms[:, 1], norms[:, 2]), 1)
        raw = self.q_mlp(self.q_norm(features))
        return equilibrate(raw[:, : self.q_dim], raw[:, self.q_dim :], batch, total, n_systems)
