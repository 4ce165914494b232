"""Activation functions by the names TorchMD-Net checkpoints use, with their Triton kernel codes."""

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from ...kernels.common import codes


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


class Activation(NamedTuple):
    """An activation: its torch module and the code of the Triton kernels' version (None: none)."""

    module: type[nn.Module]
    kernel_code: Optional[int]


# The one table: checkpoint name -> torch class -> kernel code. Swish is built with beta = 1
# (TorchMD-Net's default), i.e. SiLU.
ACTIVATIONS: dict[str, Activation] = {
    "ssp": Activation(ShiftedSoftplus, codes.SSP),
    "silu": Activation(nn.SiLU, codes.SILU),
    "tanh": Activation(nn.Tanh, codes.TANH),
    "sigmoid": Activation(nn.Sigmoid, codes.SIGMOID),
    "swish": Activation(Swish, codes.SILU),
    "mish": Activation(nn.Mish, None),
}


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class called ``name`` in a checkpoint's hyper-parameters."""
    try:
        return ACTIVATIONS[name].module
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def kernel_names() -> list[str]:
    """Names of the activations the Triton kernels have."""
    return [name for name, entry in ACTIVATIONS.items() if entry.kernel_code is not None]


def no_kernel_reason(module_class: type[nn.Module]) -> str:
    """The error users see for an activation the kernels lack."""
    return (
        f"activation {module_class.__name__} has no Triton kernel (have {', '.join(kernel_names())}); "
        "use backend='torch'"
    )


def kernel_code(module: nn.Module) -> int:
    """The Triton kernels' code of an activation module; ValueError when they have none."""
    for entry in ACTIVATIONS.values():
        if type(module) is entry.module and entry.kernel_code is not None:
            if isinstance(module, Swish) and module.beta != 1.0:
                break
            return entry.kernel_code
    raise ValueError(no_kernel_reason(type(module)))
