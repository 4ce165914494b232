"""Segment reductions with TorchMD-Net's semantics."""

import torch
from torch import Tensor

_REDUCE_NAMES = {"add": "sum", "sum": "sum", "mean": "mean", "max": "amax", "min": "amin"}


def scatter(src: Tensor, index: Tensor, dim_size: int, reduce: str = "add") -> Tensor:
    """Reduce rows of ``src`` [M, ...] into ``dim_size`` groups given by ``index`` [M].

    Reproduces TorchMD-Net 3.x: the reduction includes the initial zero of the output, so
    ``mean`` divides by (count + 1) and ``max``/``min`` never go below/above 0. This is
    what its checkpoints were trained with.
    """
    if reduce not in _REDUCE_NAMES:
        raise ValueError(f"unknown reduction {reduce!r}; known: add, sum, mean, max, min")
    shape = (dim_size,) + tuple(src.shape[1:])
    out = torch.zeros(shape, dtype=src.dtype, device=src.device)
    if _REDUCE_NAMES[reduce] == "sum":
        return out.index_add(0, index, src)
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce(0, expanded, src, _REDUCE_NAMES[reduce], include_self=True)
