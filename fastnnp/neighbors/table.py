"""Neighbour pairs as a padded table with one row per receiver (the Triton kernels' input).

``NeighborTable`` holds, for N atoms and a capacity K:

* ``neighbors`` [N, K] int32: row i lists the senders j of receiver i in slots 0 .. counts[i]-1;
  the padding slots hold i itself.
* ``images`` [N, K, 3] int32: lattice translation applied to the sender, in units of the box
  rows, so that the edge vector is ``pos[i] - pos[j] - images @ box[system of i]``; 0 for
  padding and for open boundaries.
* ``counts`` [N] int32: number of neighbours of each receiver.
* ``order`` [N] int64 or None: when given, the table numbers the atoms in this order (rows and
  senders): row a is the given atom ``order[a]``; ``inverse`` [N] int64 is each given atom's
  row. The planned Triton search sorts large systems by bin this way
  (:func:`fastnnp.kernels.common.neighbor_search.planned_search`); :func:`sorted_atoms` and
  :func:`given_order` move per-atom arrays between the two numberings.

Padding entries give a zero vector in :func:`table_vectors`. The Triton search
(:func:`fastnnp.kernels.common.neighbor_search.neighbor_table`) fills a table directly;
:func:`table_from_list` converts a :class:`~fastnnp.neighbors.cell_list.NeighborList`.
"""

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .cell_list import NeighborList


class NeighborTable(NamedTuple):
    """neighbors [N, K] int32, images [N, K, 3] int32, counts [N] int32, order and inverse
    [N] int64 or None (see module docstring)."""

    neighbors: Tensor
    images: Tensor
    counts: Tensor
    order: Optional[Tensor] = None
    inverse: Optional[Tensor] = None


def sorted_atoms(table: NeighborTable, *arrays: Tensor) -> tuple[Tensor, ...]:
    """Per-atom ``arrays`` (first dimension N, given order) in the table's numbering
    (differentiable; the arrays themselves when the table keeps the given order)."""
    if table.order is None:
        return arrays
    return tuple(a.index_select(0, table.order) for a in arrays)


def given_order(table: NeighborTable, *arrays: Tensor) -> tuple[Tensor, ...]:
    """Per-atom ``arrays`` in the table's numbering back in the given order (differentiable)."""
    if table.inverse is None:
        return arrays
    return tuple(a.index_select(0, table.inverse) for a in arrays)


def table_from_list(graph: NeighborList, n_atoms: int, capacity: Optional[int] = None) -> NeighborTable:
    """The pairs of ``graph`` (sorted by receiver, as :func:`fastnnp.neighbors.neighbor_list`
    returns them) as a table of width ``capacity`` (default: the largest neighbour count, at
    least 1), on the graph's device. Row i holds i's senders in the list's order."""
    receiver, sender = graph.edge_index
    device = receiver.device
    counts = torch.bincount(receiver, minlength=n_atoms)
    width = max(1, int(counts.max())) if capacity is None else int(capacity)
    slot = torch.arange(receiver.shape[0], device=device) - (torch.cumsum(counts, 0) - counts)[receiver]
    neighbors = torch.arange(n_atoms, device=device)[:, None].repeat(1, width)
    neighbors[receiver, slot] = sender
    images = torch.zeros(n_atoms, width, 3, dtype=torch.int32, device=device)
    images[receiver, slot] = graph.image.to(torch.int32)
    return NeighborTable(neighbors.to(torch.int32), images, counts.to(torch.int32))


def table_vectors(table: NeighborTable, pos: Tensor, batch: Tensor, box: Optional[Tensor]) -> Tensor:
    """Edge vectors [N, K, 3] ``pos[i] - pos[j] - images @ box[system of i]``, differentiable
    in ``pos`` and ``box``. Padding entries (j = i, image 0) give exactly 0.

    ``box`` is None, (3, 3), (1, 3, 3) or (S, 3, 3), as passed to the search.
    """
    vec = pos.unsqueeze(1) - pos[table.neighbors.long()]
    if box is None:
        return vec
    img = table.images.to(pos.dtype)
    box = box.to(pos.dtype)
    if box.dim() == 2 or box.shape[0] == 1:
        return vec - img @ box.reshape(3, 3)
    return vec - torch.bmm(img, box.index_select(0, batch))
