"""fastnnp: fast, exact inference for TorchMD-Net neural network potentials."""

from .calculator import FastNNPCalculator
from .checkpoint import CheckpointError
from .ensemble import Ensemble
from .loading import load_model

__all__ = ["load_model", "FastNNPCalculator", "Ensemble", "CheckpointError"]
__version__ = "0.1.0"
