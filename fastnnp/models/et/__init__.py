"""The Equivariant Transformer (TorchMD-ET): the pure-torch reference."""

from .reference import EquivariantTransformer

__all__ = ["EquivariantTransformer"]
