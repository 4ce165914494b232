"""TorchMD-Net checkpoints: their format in both directions (:mod:`.format`), safe reading (:mod:`.reader`)
and the file's integrity (:mod:`.archive`)."""

from .format import (
    LAYOUTS,
    lightning_state_from_model,
    model_state_from_lightning,
    tensornet_layout,
)
from .archive import CheckpointError, verified_archive
from .reader import Checkpoint, read_checkpoint

__all__ = [
    "LAYOUTS", "Checkpoint", "CheckpointError",
    "lightning_state_from_model", "model_state_from_lightning", "read_checkpoint", "tensornet_layout",
    "verified_archive",
]
