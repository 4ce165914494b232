"""Per-atom MLP and the gated equivariant block of TorchMD-Net's output heads.

Both keep TorchMD-Net's module names so its state dicts load unchanged:
``layers.0.weight``, ``layers.2.bias``, ... for :class:`MLP`, and ``vec1_proj.weight``,
``vec2_proj.weight``, ``update_net.layers.{0,2}.*`` for :class:`GatedEquivariantBlock`.
"""

import torch
from torch import Tensor, nn

from fastnnp.models.common.activations import activation_class


class MLP(nn.Module):
    """``Linear(in, hidden), act, [Linear(hidden, hidden), act] * num_hidden_layers, Linear(hidden, out)``.

    The linear layers sit at the even indices of :attr:`layers` (``layers.0``, ``layers.2``, ...);
    the activations (parameter-free) at the odd ones.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        activation: str = "silu",
        num_hidden_layers: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        act = activation_class(activation)
        self.num_hidden_layers = int(num_hidden_layers)
        modules: list[nn.Module] = [nn.Linear(in_channels, hidden_channels, dtype=dtype), act()]
        for _ in range(self.num_hidden_layers):
            modules += [nn.Linear(hidden_channels, hidden_channels, dtype=dtype), act()]
        modules.append(nn.Linear(hidden_channels, out_channels, dtype=dtype))
        self.layers = nn.Sequential(*modules)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (TorchMD-Net's initialisation)."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schütt et al. 2021, PaiNN) as TorchMD-Net implements it.

    ``forward(x [N, H], v [N, 3, H]) -> (x' [N, out], v' [N, 3, out])``::

        n    = |vec1_proj(v)|            (norm over the spatial axis, per channel)
        x', g = split(update_net(cat(x, n)), out)
        v'   = g * vec2_proj(v)
        x'   = act(x')                   (only with scalar_activation)

    Zero-vector handling as TorchMD-Net: an atom whose projected vectors are zero in every
    channel (an atom with no neighbour) gets ``n = 0`` and no gradient through the norm, which
    would otherwise be NaN. TorchMD-Net also emits a warning for such atoms; this version does
    not (the check would need a host synchronisation on every call).
    """

    def __init__(
        self,
        hidden_channels: int,
        out_channels: int,
        intermediate_channels: int | None = None,
        activation: str = "silu",
        scalar_activation: bool = False,
        dtype: torch.dtype = torch.float32,
        num_hidden_layers: int = 0,
    ):
        super().__init__()
        self.out_channels = int(out_channels)
        if intermediate_channels is None:
            intermediate_channels = hidden_channels
        self.vec1_proj = nn.Linear(hidden_channels, hidden_channels, bias=False, dtype=dtype)
        self.vec2_proj = nn.Linear(hidden_channels, out_channels, bias=False, dtype=dtype)
        self.update_net = MLP(
            2 * hidden_channels,
            2 * out_channels,
            intermediate_channels,
            activation,
            num_hidden_layers=num_hidden_layers,
            dtype=dtype,
        )
        self.act = activation_class(activation)() if scalar_activation else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections, and the update MLP's own initialisation (TorchMD-Net's)."""
        nn.init.xavier_uniform_(self.vec1_proj.weight)
        nn.init.xavier_uniform_(self.vec2_proj.weight)
        self.update_net.reset_parameters()

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        vec1 = self.vec1_proj(v)
        # Per atom: does any component of any channel differ from zero?
        nonzero = (vec1 != 0).flatten(1).any(dim=1)
        keep = nonzero.view(-1, 1, 1)
        # Replace all-zero atoms by ones before the norm so that neither value nor gradient
        # is NaN there, then zero their result: same values and gradients as TorchMD-Net's
        # masked assignment, without a data-dependent branch.
        norm = torch.linalg.vector_norm(torch.where(keep, vec1, torch.ones_like(vec1)), dim=-2)
        norm = torch.where(nonzero.view(-1, 1), norm, torch.zeros_like(norm))
        vec2 = self.vec2_proj(v)
        x, gate = torch.split(self.update_net(torch.cat([x, norm], dim=-1)), self.out_channels, dim=-1)
        v = gate.unsqueeze(1) * vec2
        if self.act is not None:
            x = self.act(x)
        return x, v
