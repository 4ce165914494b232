"""TensorNet: the pure-torch reference (:mod:`.reference`, the CPU path and the kernels' oracle)
and its Triton glue (:mod:`.triton`, ``TritonTensorNet``; imports Triton, so it is loaded on use)."""

from .reference import TensorNet

__all__ = ["TensorNet"]
