"""What every representation on Triton kernels shares (TensorNet, ET, GN): the backend's
refusals, the planned neighbour search and its edge vectors, and the kernels' view of the
parameters made once per parameter version.

A representation class derives from its reference class and :class:`TritonRepresentation`,
calls :meth:`~TritonRepresentation.setup_kernels` in ``__init__`` and defines
``_make_constants()``; its forward starts with :meth:`~TritonRepresentation.kernel_edges`, runs
on the atoms in the table's numbering (bin-sorted for large systems) and returns its per-atom
outputs in the given order (:func:`~fastnnp.neighbors.table.given_order`).
"""

from typing import Any, Iterable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ...kernels.common.interpreter import check_triton_device
from ...kernels.common.op_args import constant
from ...kernels.common.search_plan import PlannedTableSearch
from ...kernels.common.table_vectors import table_vectors
from ...neighbors.table import NeighborTable, sorted_atoms
from ...status import StepStatus, is_planned
from ...validation import MIN_DISTANCE
from .activations import kernel_code


class KernelEdges(NamedTuple):
    """The neighbour table, its edge vectors [N, K, 3] and the atoms' numbers z [N] and systems
    batch [N], all in the table's numbering."""

    table: NeighborTable
    vec: Tensor
    z: Tensor
    batch: Tensor


class TritonRepresentation:
    """Mixin for an ``nn.Module`` representation whose edge work runs on Triton kernels."""

    def setup_kernels(self, activations: Iterable[nn.Module]) -> None:
        """The search hook and the constants cache; ValueError for an activation in
        ``activations`` that has no kernel."""
        # plans once per topology, then searches with no host sync; a fastnnp.neighbors.reuse cache may replace it
        self.table_search = PlannedTableSearch()
        self._constants: Optional[tuple] = None
        self._slots: Optional[Tensor] = None  # 0 .. K - 1, the table's slot numbers
        self._close_bit: Optional[Tensor] = None  # StepStatus.CLOSE as a 0-d int32 on the device
        for act in activations:
            kernel_code(act)

    def kernel_edges(self, z: Tensor, pos: Tensor, batch: Tensor, box: Optional[Tensor]) -> KernelEdges:
        """The neighbour table within the cutoffs, its edge vectors (differentiable in ``pos``
        and ``box``) and z, batch in its numbering, after the backend's refusals: float32 only,
        a CUDA device (or the interpreter), frozen parameters."""
        if pos.dtype != torch.float32:
            raise ValueError(f"backend='triton' runs float32 only, got {pos.dtype}; use backend='torch' for float64")
        check_triton_device(pos.device)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError(
                "backend='triton' treats the parameters as constants (energies, forces, stress); "
                "freeze them with model.requires_grad_(False), or train with backend='torch'"
            )
        table = self.table_search(
            constant(pos), batch, self.cutoff_upper, self.cutoff_lower, box=None if box is None else constant(box),
        )
        z, pos, batch = sorted_atoms(table, z, pos, batch)
        vec = table_vectors(table, pos, batch, box)
        if self.flags_close_pairs:
            self._flag_close_pairs(table, vec)
        return KernelEdges(table, vec, z, batch)

    @property
    def flags_close_pairs(self) -> bool:
        """Whether each call ORs :attr:`StepStatus.CLOSE` into its planned search's status where
        two atoms are closer than MIN_DISTANCE: when the table holds every such pair (no lower
        cutoff) and the search keeps a status (the planned search; not a Verlet or LAMMPS one)."""
        return self.cutoff_lower == 0 and is_planned(self.table_search)

    def _flag_close_pairs(self, table: NeighborTable, vec: Tensor) -> None:
        """The check of :func:`fastnnp.validation.check_geometry` on the device, from the table's
        own edge vectors (padding slots excluded): no host sync, read with the status."""
        with torch.no_grad():
            width = vec.shape[1]
            if self._slots is None or self._slots.shape[0] != width or self._slots.device != vec.device:
                self._slots = torch.arange(width, device=vec.device)
                self._close_bit = torch.tensor(int(StepStatus.CLOSE), dtype=torch.int32, device=vec.device)
            close = ((vec.norm(dim=-1) < MIN_DISTANCE) & (self._slots < table.counts[:, None])).any()
            hook = self.table_search
            hook.status = hook.status | close * self._close_bit  # int32, as the search's status

    def kernel_constants(self) -> Any:
        """The kernels' view of the parameters (``_make_constants()``), made once per parameter
        version and radial tables (parameters are constants here). ``load_state_dict``, ``.to()``
        and in-place edits under ``no_grad`` rebuild it; an edit through ``p.data`` bypasses the
        version counter and is not seen (like the radial tables, built at load). torch.compile
        traces the one an eager call made (or makes it in its graph)."""
        if torch.compiler.is_compiling():
            return self._make_constants() if self._constants is None else self._constants[1]
        key = (
            tuple((p.data_ptr(), p._version, p.device) for p in self.parameters()),
            tuple(id(m.radial_table) for m in self.modules() if hasattr(m, "radial_table")),
        )
        if self._constants is None or self._constants[0] != key:
            with torch.no_grad():
                self._constants = (key, self._make_constants())
        return self._constants[1]
