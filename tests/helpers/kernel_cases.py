"""Small random systems and reference neighbour tables for the Triton kernel tests.

The tables here are built from the pure-torch neighbour list (not from the Triton search), so
each kernel is tested on its own.
"""

from typing import Optional

import torch
from torch import Tensor

from fastnnp.kernels.common.neighbor_search import NeighborTable
from fastnnp.neighbors import neighbor_list

CUTOFF = 4.0


def random_system(kind: str, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """(z, pos, batch, box) of a small system: "open" (one molecule), "periodic" (a triclinic
    cell) or "batched" (three open molecules of different sizes)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "periodic":
        box = torch.tensor([[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 6.8]])
        frac = torch.rand(30, 3, generator=generator)
        pos = frac @ box + 0.3 * torch.randn(30, 3, generator=generator)
        batch = torch.zeros(30, dtype=torch.long)
    else:
        sizes = [9] if kind == "open" else [5, 11, 7]
        pos = torch.cat([torch.randn(n, 3, generator=generator) * 1.6 for n in sizes])
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        box = None
    z = torch.randint(1, 10, (pos.shape[0],), generator=generator)
    return z, pos, batch, box


def reference_table(
    pos: Tensor, batch: Tensor, box: Optional[Tensor], cutoff: float = CUTOFF, cutoff_lower: float = 0.0
) -> tuple[NeighborTable, Tensor]:
    """The pure-torch neighbour list as a padded table, and its edge vectors [N, K, 3]."""
    graph = neighbor_list(pos, batch, cutoff, cutoff_lower, box=box, loop=False)
    receiver, sender = graph.edge_index
    n = pos.shape[0]
    counts = torch.bincount(receiver, minlength=n)
    capacity = max(1, int(counts.max()) + 3)
    slot = torch.arange(receiver.shape[0]) - (torch.cumsum(counts, 0) - counts)[receiver]
    neighbors = torch.arange(n)[:, None].repeat(1, capacity)
    neighbors[receiver, slot] = sender
    images = torch.zeros(n, capacity, 3, dtype=torch.int32)
    images[receiver, slot] = graph.image.to(torch.int32)
    vec = torch.zeros(n, capacity, 3, dtype=pos.dtype)
    vec[receiver, slot] = graph.edge_vec
    table = NeighborTable(neighbors.to(torch.int32), images, counts.to(torch.int32))
    return table, vec
