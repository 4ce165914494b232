"""The Triton search as a planned hook: plan once per topology, then search with no host sync.

:class:`PlannedTableSearch` takes the place of :func:`~.neighbor_search.neighbor_table` as a
Triton representation's ``table_search`` (same arguments). Its first call for a topology (atom
count, the ``batch`` tensor itself, the box's shape, the cutoffs) checks the inputs and plans
(:func:`~.neighbor_search.plan_search`, host syncs); later calls with the same topology run
:func:`~.neighbor_search.planned_search` only and leave its status in ``status`` (a device
tensor, :class:`fastnnp.status.StepStatus` bits). A ``capacity`` makes the table at least
that wide (a narrower plan plans again). Whoever calls the model reads it after the
step (:meth:`fastnnp.models.potential.NeuralPotential.settle`) and, where it says so, calls
:meth:`replan` and runs the step again: nothing is ever truncated.

The ``batch`` tensor is compared by identity (and, in eager calls, its in-place version
counter), never by value, which would read it on the host: a new tensor with equal values
plans again. Under ``torch.compile`` a plan made by an eager call is reused as it stands.

``sort_atoms`` (None: by size, :data:`~.neighbor_search.SORT_MIN_ATOMS`; True or False) is
passed to the plan: whether its tables number the atoms in the bin-sorted order.
"""

from typing import Optional

import torch
from torch import Tensor

from ...neighbors.checks import check_search_inputs
from ...neighbors.table import NeighborTable
from ...status import StepStatus
from .neighbor_search import SearchPlan, plan_search, planned_search, wider_capacity


class PlannedTableSearch:
    """``neighbor_table``-like callable with a plan per topology (module docstring)."""

    def __init__(self, sort_atoms: Optional[bool] = None):
        self.sort_atoms = sort_atoms
        self.plan: Optional[SearchPlan] = None
        self.status: Optional[Tensor] = None
        self.builds = 0
        self._key = None
        self._batch: Optional[Tensor] = None
        self._version = 0
        self._need: Optional[Tensor] = None  # the last search's largest neighbour count
        self._replan_capacity: Optional[int] = None

    def __call__(
        self,
        pos: Tensor,
        batch: Tensor,
        cutoff_upper: float,
        cutoff_lower: float = 0.0,
        box: Optional[Tensor] = None,
        capacity: Optional[int] = None,
    ) -> NeighborTable:
        # (torch.compile traces a planned call: the version counter is not a constant there)
        key = (pos.shape[0], pos.device, None if box is None else box.shape[:-2], float(cutoff_upper), float(cutoff_lower))
        changed = self._batch is not batch or (not torch.compiler.is_compiling() and batch._version != self._version)
        narrow = capacity is not None and self.plan is not None and capacity > self.plan.capacity
        if self.plan is None or key != self._key or changed or narrow:
            pos_c, batch_c, box_c, _, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, None)
            width = max(capacity or 0, self._replan_capacity or 0) or None
            self.plan = plan_search(pos_c, batch_c, cu, cl, box_c, width, self.sort_atoms)
            self._key, self._batch, self._version, self._replan_capacity = key, batch, batch._version, None
            self.builds += 1
        table, self.status, self._need = planned_search(self.plan, pos, box)
        return table

    def replan(self, flags: StepStatus) -> None:
        """Plan again at the next call, after a step whose status had ``flags``: with an
        overflow, as wide as the last search's largest count needs (read here)."""
        if flags & StepStatus.OVERFLOW and self._need is not None:
            self._replan_capacity = wider_capacity(int(self._need))
        self.plan = None

    def __repr__(self) -> str:
        return f"PlannedTableSearch(builds={self.builds})"
