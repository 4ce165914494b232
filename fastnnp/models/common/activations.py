"""Activation functions by the names TorchMD-Net checkpoints use."""

import torch
from torch import Tensor, nn


# TorchMD-Net shifts by log(2) rounded to float32, also in float64 models; so do we.
_LOG2_FLOAT32 = float(torch.log(torch.tensor(2.0, dtype=torch.float32)))


class ShiftedSoftplus(nn.Module):
    """softplus(x) - log(2) (float32-rounded log 2, as TorchMD-Net): zero at the origin."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - _LOG2_FLOAT32


class Swish(nn.Module):
    """x * sigmoid(beta * x)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ssp": ShiftedSoftplus,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "swish": Swish,
    "mish": nn.Mish,
}


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class called ``name`` in a checkpoint's hyper-parameters."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
