"""TensorNet2 (the AceFF-2.0 architecture): TensorNet with per-layer partial-charge prediction
and charge equilibration; the pure-torch reference (:mod:`.reference`)."""

from .reference import TensorNet2

__all__ = ["TensorNet2"]
