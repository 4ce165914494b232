"""Small random systems and reference neighbour tables for the Triton kernel tests.

The tables here are built from the pure-torch neighbour list (not from the Triton search), so
each kernel is tested on its own.
"""

from typing import Optional

import torch
from torch import Tensor

from fastnnp.neighbors import NeighborTable, neighbor_list, table_from_list

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
    """The pure-torch neighbour list as a padded table three slots wider than the largest
    neighbour count, and its edge vectors [N, K, 3] (0 in the padding)."""
    graph = neighbor_list(pos, batch, cutoff, cutoff_lower, box=box, loop=False)
    n = pos.shape[0]
    capacity = max(1, int(torch.bincount(graph.edge_index[0], minlength=n).max()) + 3)
    table = table_from_list(graph, n, capacity)
    # the list is sorted by receiver, so its edges fill the used slots in row-major order
    vec = torch.zeros(n, capacity, 3, dtype=pos.dtype)
    vec[torch.arange(capacity) < table.counts[:, None]] = graph.edge_vec
    return table, vec
