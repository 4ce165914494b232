"""Several potentials evaluated together: mean and spread of their predictions."""

from typing import Optional

import torch
from torch import Tensor, nn


class Ensemble(nn.ModuleList):
    """Calls every member with the same inputs.

    Returns ``(energy_mean, neg_dy_mean)``, or with ``return_std`` also
    ``(energy_std, neg_dy_std)`` (sample standard deviation over members).
    """

    def __init__(self, members: list[nn.Module], return_std: bool = False):
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one model")
        super().__init__(members)
        self.return_std = return_std

    def forward(self, *args, **kwargs) -> tuple[Optional[Tensor], ...]:
        outputs = [member(*args, **kwargs) for member in self]
        energies = torch.stack([out[0] for out in outputs])
        result = [energies.mean(0), None]
        has_forces = outputs[0][1] is not None
        if has_forces:
            forces = torch.stack([out[1] for out in outputs])
            result[1] = forces.mean(0)
        if self.return_std:
            result += [energies.std(0), forces.std(0) if has_forces else None]
        return tuple(result)
