"""Cosine cutoff and radial basis expansions (distances in the model's length unit)."""

import math

import torch
from torch import Tensor, nn


def cosine_cutoff(distance: Tensor, lower: float, upper: float) -> Tensor:
    """Smooth cutoff: 1 at ``lower`` (or 0 when lower is 0), 0 at and beyond ``upper``.

    With ``lower > 0`` the function is a full cosine period between the two cutoffs and is
    zero outside ``(lower, upper)``, as in TorchMD-Net.
    """
    if lower > 0:
        phase = math.pi * (2 * (distance - lower) / (upper - lower) + 1.0)
        inside = (distance < upper) & (distance > lower)
        return 0.5 * (torch.cos(phase) + 1.0) * inside
    return 0.5 * (torch.cos(distance * (math.pi / upper)) + 1.0) * (distance < upper)


class CosineCutoff(nn.Module):
    """Module form of :func:`cosine_cutoff`."""

    def __init__(self, cutoff_lower: float = 0.0, cutoff_upper: float = 5.0):
        super().__init__()
        self.cutoff_lower = float(cutoff_lower)
        self.cutoff_upper = float(cutoff_upper)

    def forward(self, distance: Tensor) -> Tensor:
        return cosine_cutoff(distance, self.cutoff_lower, self.cutoff_upper)


def _register(module: nn.Module, trainable: bool, **tensors: Tensor) -> None:
    """Attach ``tensors`` to ``module`` as parameters (trainable) or buffers, in order."""
    for name, tensor in tensors.items():
        if trainable:
            module.register_parameter(name, nn.Parameter(tensor))
        else:
            module.register_buffer(name, tensor)


class ExpNormalSmearing(nn.Module):
    """PhysNet's exponential-normal basis times a cosine cutoff at ``cutoff_upper``.

    ``forward(d[E]) -> [E, num_rbf]``. Parameters ``means``/``betas`` are buffers, or
    trainable parameters when ``trainable``.
    """

    def __init__(
        self,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        num_rbf: int = 50,
        trainable: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.cutoff_lower = float(cutoff_lower)
        self.cutoff_upper = float(cutoff_upper)
        self.alpha = 5.0 / (self.cutoff_upper - self.cutoff_lower)
        start = torch.exp(torch.scalar_tensor(self.cutoff_lower - self.cutoff_upper, dtype=dtype))
        means = torch.linspace(start, 1, num_rbf, dtype=dtype)
        betas = torch.full((num_rbf,), float((2 / num_rbf * (1 - start)) ** -2), dtype=dtype)
        _register(self, trainable, means=means, betas=betas)

    def forward(self, distance: Tensor) -> Tensor:
        d = distance.unsqueeze(-1)
        envelope = cosine_cutoff(d, 0.0, self.cutoff_upper)
        shifted = torch.exp(self.alpha * (self.cutoff_lower - d)) - self.means
        return envelope * torch.exp(-self.betas * shifted**2)


class GaussianSmearing(nn.Module):
    """Gaussians centred on ``linspace(lower, upper, num_rbf)``; ``forward(d[E]) -> [E, num_rbf]``."""

    def __init__(
        self,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        num_rbf: int = 50,
        trainable: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        offset = torch.linspace(float(cutoff_lower), float(cutoff_upper), num_rbf, dtype=dtype)
        coeff = -0.5 / (offset[1] - offset[0]) ** 2
        _register(self, trainable, coeff=coeff, offset=offset)

    def forward(self, distance: Tensor) -> Tensor:
        return torch.exp(self.coeff * (distance.unsqueeze(-1) - self.offset) ** 2)


RADIAL_BASES: dict[str, type[nn.Module]] = {
    "expnorm": ExpNormalSmearing,
    "gauss": GaussianSmearing,
}


def radial_basis(
    name: str, cutoff_lower: float, cutoff_upper: float, num_rbf: int, trainable: bool,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build the radial basis called ``name`` (``expnorm`` or ``gauss``)."""
    if name not in RADIAL_BASES:
        raise ValueError(f"unknown rbf_type {name!r}; known: {', '.join(sorted(RADIAL_BASES))}")
    return RADIAL_BASES[name](cutoff_lower, cutoff_upper, num_rbf, trainable, dtype=dtype)
