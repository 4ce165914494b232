"""The Graph Network (TorchMD-GN, SchNet-like): the pure-torch reference."""

from .reference import GraphNetwork

__all__ = ["GraphNetwork"]
