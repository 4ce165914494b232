"""Training TorchMD-Net models with torchmd-train's configuration: config keys and data."""

from .config import FASTNNP_KEYS, KEY_HANDLING, TORCHMD_TRAIN_DEFAULTS, ConfigWarning, load_config
from .data import Batch, Frame, collate, load_frames, make_splits

__all__ = ["FASTNNP_KEYS", "KEY_HANDLING", "TORCHMD_TRAIN_DEFAULTS", "Batch", "ConfigWarning", "Frame", "collate",
           "load_config", "load_frames", "make_splits"]
