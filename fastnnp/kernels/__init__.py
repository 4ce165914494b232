"""fastnnp's Triton kernels: ``common/`` (device code any architecture can use: activations,
radial bases, cutoffs, edge tiles, the neighbour search, the interpreter switch) and one folder
per architecture (``tensornet/``), each kernel family with its float64 torch reference
(``reference.py``) beside it. Importing this package does not import Triton."""

from .common.interpreter import check_triton_device, interpreting

__all__ = ["check_triton_device", "interpreting"]
