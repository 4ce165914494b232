"""TorchMD-Net checkpoints: their format in both directions (:mod:`.format`) and safe reading (:mod:`.reader`)."""

from .format import (
    LAYOUTS,
    lightning_state_from_model,
    model_state_from_lightning,
    tensornet_layout,
)
from .reader import Checkpoint, CheckpointError, read_checkpoint

__all__ = [
    "LAYOUTS", "Checkpoint", "CheckpointError",
    "lightning_state_from_model", "model_state_from_lightning", "read_checkpoint", "tensornet_layout",
]
