"""Neighbour pairs within a cutoff: the torch cell list (:mod:`.cell_list`) and Verlet-skin
reuse of a search across MD steps (:mod:`.reuse`)."""

from .cell_list import NeighborList, neighbor_list

__all__ = ["NeighborList", "neighbor_list"]
