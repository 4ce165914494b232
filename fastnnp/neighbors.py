"""Neighbour pairs within a cutoff (TEMPORARY brute-force version; the cell list replaces it).

Conventions (TorchMD-Net's): both directions of every pair; ``edge_index[0]`` is the receiving
atom i, ``edge_index[1]`` the sender j; ``edge_vec = pos[i] - pos[j] - image @ box`` (the
vector from the periodic image of j to i); ``cutoff_lower <= |edge_vec| < cutoff_upper``;
with ``loop=True`` every atom also gets one self loop (i, i) of length 0.
"""

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class NeighborList(NamedTuple):
    """Pairs sorted by receiver. edge_index [2, E] int64, edge_vec [E, 3], edge_weight [E],
    image [E, 3] int64 lattice translation applied to the sender."""

    edge_index: Tensor
    edge_vec: Tensor
    edge_weight: Tensor
    image: Tensor


def neighbor_list(
    pos: Tensor,
    batch: Tensor,
    cutoff_upper: float,
    cutoff_lower: float = 0.0,
    box: Optional[Tensor] = None,
    loop: bool = False,
) -> NeighborList:
    """All pairs within the cutoff, differentiable with respect to ``pos`` (and ``box``)."""
    with torch.no_grad():
        n = pos.shape[0]
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        i, j = i.reshape(-1), j.reshape(-1)
        keep = (batch[i] == batch[j]) & (i != j)
        i, j = i[keep], j[keep]
        d = (pos[i] - pos[j]).norm(dim=-1)
        keep = (d >= cutoff_lower) & (d < cutoff_upper)
        i, j = i[keep], j[keep]
        if loop:
            ar = torch.arange(n)
            i, j = torch.cat([i, ar]), torch.cat([j, ar])
        order = torch.argsort(i * n + j)
        i, j = i[order], j[order]
    edge_vec = pos[i] - pos[j]
    image = torch.zeros(i.shape[0], 3, dtype=torch.long)
    return NeighborList(torch.stack([i, j]), edge_vec, edge_vec.norm(dim=-1), image)
