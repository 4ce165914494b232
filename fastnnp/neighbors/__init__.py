"""Neighbour pairs within a cutoff.

* :mod:`.cell_list`: the torch cell-list search, :func:`neighbor_list`;
* :mod:`.cells`: the cell-grid steps it shares with the Triton search;
* :mod:`.checks`: input checks and the singular-cell rule of every layer;
* :mod:`.edges`: edge vectors, lengths and the exact cutoff test;
* :mod:`.table`: pairs as a padded per-receiver table (the Triton kernels' layout);
* :mod:`.reuse`: Verlet-skin reuse of a search across MD steps.
"""

from .cell_list import NeighborList, neighbor_list
from .table import NeighborTable, table_from_list

__all__ = ["NeighborList", "NeighborTable", "neighbor_list", "table_from_list"]
