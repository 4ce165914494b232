"""Exponential moving averages: of the losses (TorchMD-Net's ``ema_alpha_*``) and of the weights (fastnnp).

Loss EMA, as TorchMD-Net's LNNP: for the train and val stages, a loss of kind ``y`` or ``neg_dy``
with ``0 < alpha < 1`` is replaced by ``alpha * loss + (1 - alpha) * previous`` (the previous
smoothed value of that stage, kind and loss function; the first batch starts it), and the
smoothed value is what is optimised and logged.

Weight EMA (fastnnp-only, config key ``weight_ema_decay``, off by default): after every optimizer
step the averaged weights become ``decay * averaged + (1 - decay) * current``. Validation,
testing and the written checkpoints use the averaged weights; training continues on the raw ones.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class LossEMA:
    """Smoothed losses per (stage, kind, loss name); ``state_dict`` holds detached tensors."""

    def __init__(self, alpha_y: float, alpha_neg_dy: float):
        self.alpha = {"y": float(alpha_y), "neg_dy": float(alpha_neg_dy)}
        self.values: dict[str, Tensor] = {}

    def __call__(self, stage: str, kind: str, loss_name: str, loss: Tensor) -> Tensor:
        alpha = self.alpha.get(kind, 1.0)
        if stage not in ("train", "val") or not 0 < alpha < 1:
            return loss
        key = f"{stage}/{kind}/{loss_name}"
        previous = self.values.get(key, loss.detach())
        loss = alpha * loss + (1 - alpha) * previous
        self.values[key] = loss.detach()
        return loss

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.cpu() for k, v in self.values.items()}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.values = {k: v.to(device) for k, v in state.items()}


def weight_ema(model: nn.Module, decay: Optional[float]) -> Optional[AveragedModel]:
    """An exponential moving average of ``model``'s parameters (buffers are copied), or None without ``decay``."""
    if decay is None:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"weight_ema_decay must lie in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
