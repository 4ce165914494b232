"""One energy + forces step of a fixed topology with no host round trip.

``step = EnergyStep(model, z, pos, batch, box, q)`` validates the topology once (atomic
numbers, systems, charges, the cell's shape; host syncs allowed). Then ``step(pos, box)``
computes the energy, the forces and, asked for in ``properties`` (ASE's names), the per-atom
energies (``"energies"``) and the stress (``"stress"``, with a box) with no device→host sync: only shape, dtype and device are checked on the host;
non-finite positions or cell entries, a neighbour table that overflowed and a search grid the
cell outgrew are flagged in a 0-d int32 ``status`` on the device
(:class:`fastnnp.status.StepStatus`). Such a call can be captured in a CUDA graph.
``step.run(pos, box)`` reads the status after the step (one sync), raises for non-finite
input, and where the results are incomplete replans the searches and computes the step again:
results are never truncated or wrong. :class:`GraphedStep` replays a step as a CUDA graph
(what :class:`fastnnp.FastNNPCalculator` and the benchmark's ``fastnnp-triton-graph`` row use).
"""

from collections.abc import Collection
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .derivatives import EnergyDerivatives, strained_derivatives
from .memory import check_fits, estimate_call_bytes, model_footprint, system_volumes
from .models.potential import NeuralPotential
from .status import StepStatus, status_tensor
from .validation import check_inputs, check_tensor_argument


class StepResult(NamedTuple):
    """:class:`~fastnnp.derivatives.EnergyDerivatives` of one step and its device ``status``."""

    derivatives: EnergyDerivatives
    status: Tensor


PROPERTIES = frozenset({"energy", "forces", "energies", "stress"})


class EnergyStep:
    """Sync-free energy and derivatives of ``model`` for the topology ``z`` [N], ``batch`` [N]
    (default one system), ``q`` [n_systems] and the shape of ``box`` (module docstring).
    ``pos`` [N, 3] (and ``box``) are a first configuration, validated like every model input.
    ``properties``: energy and forces always; ``"energies"`` adds the per-atom energies (models
    with a per-atom split), ``"stress"`` the stress (a box needed); what is not asked for is
    None in the results and costs nothing. A topology whose call cannot fit in the device's
    free memory is refused here (:class:`fastnnp.memory.CallTooLarge`, :func:`fastnnp.memory.check_fits`)."""

    def __init__(
        self,
        model: NeuralPotential,
        z: Tensor,
        pos: Tensor,
        batch: Optional[Tensor] = None,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
        properties: Collection[str] = ("energy", "forces"),
    ):
        _check_arguments(model, z, pos, batch, box, q, properties)
        unknown = set(properties) - PROPERTIES
        if unknown:
            raise ValueError(f"unknown properties {sorted(unknown)}; a step computes {sorted(PROPERTIES)}")
        if "stress" in properties and box is None:
            raise ValueError("the stress needs a box (a periodic cell)")
        if "energies" in properties and not model.has_atom_energies:
            raise ValueError(
                "per-atom energies need a summed scalar head without post-reduction priors (ZBL, D2, Coulomb)"
            )
        self.model = model
        if batch is None and z.dim() == 1:  # the step's own (a model call without a batch reuses the model's)
            batch = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        self.z, self.batch, self.q, self.n_systems = model._checked(z, pos, batch, box, q)
        self.stress = "stress" in properties
        self.atoms_per_system = (
            torch.bincount(self.batch, minlength=self.n_systems) if "energies" in properties else None
        )
        self.pos_meta = (pos.shape, pos.dtype, pos.device)
        self.box_shape = None if box is None else box.shape
        _check_memory(model, pos, self.batch, box, self.n_systems)

    def __call__(self, pos: Tensor, box: Optional[Tensor] = None) -> StepResult:
        """The step on ``pos`` [N, 3] (and ``box``, shaped as at construction): no host sync."""
        self._check_shapes(pos, box)
        model = self.model

        def energy_terms(strained_pos: Tensor, strained_box: Optional[Tensor]):
            return model.checked_energy_terms(
                self.z, strained_pos, self.batch, strained_box, self.q, self.n_systems, self.atoms_per_system
            )

        result = strained_derivatives(energy_terms, pos, self.batch, box, stress=self.stress)
        # x - x is 0 for a finite sum, NaN where an entry (or the sum) is not finite; settle() names the entry
        total = pos.sum() if box is None else pos.sum() + box.sum()
        status = status_tensor({StepStatus.NONFINITE: (total - total) != 0})
        searched = model.search_status()
        return StepResult(result, status if searched is None else status | searched)

    def run(self, pos: Tensor, box: Optional[Tensor] = None) -> EnergyDerivatives:
        """The step, its status read and acted on (module docstring)."""
        return self.model.settled(lambda: self(pos, box), lambda result: self.settle(result.status, pos, box)).derivatives

    def settle(self, status: Tensor, pos: Tensor, box: Optional[Tensor]) -> bool:
        """Read ``status`` (one sync): raise ValueError naming the bad input where a position or
        the cell is not finite; else :meth:`NeuralPotential.settle` (True: the results stand)."""
        if StepStatus(int(status)) & StepStatus.NONFINITE:
            check_inputs(self.z, pos, self.batch, box, self.q, self.model.max_z, self.model.dtype)  # names the entry
            raise ValueError(f"the positions and cell entries are finite but their sum is not in {pos.dtype}: "
                             "coordinates this large are not a structure")
        return self.model.settle(status, (pos, self.batch, box))

    def _check_shapes(self, pos: Tensor, box: Optional[Tensor]) -> None:
        if (pos.shape, pos.dtype, pos.device) != self.pos_meta:
            raise ValueError(
                f"pos must keep the step's shape, dtype and device {self.pos_meta}, got "
                f"{(pos.shape, pos.dtype, pos.device)}; make a new EnergyStep for a new topology"
            )
        if (None if box is None else box.shape) != self.box_shape:
            raise ValueError(
                f"box must keep the step's shape {self.box_shape}, got {None if box is None else box.shape}"
            )


def _check_arguments(model, z, pos, batch, box, q, properties) -> None:
    """Types of the step's arguments, named, before anything reads them."""
    if not isinstance(model, NeuralPotential):
        raise TypeError(f"model must be a fastnnp potential (fastnnp.load_model), got {type(model).__name__}")
    check_tensor_argument("z", z, "atomic numbers [n_atoms]")
    check_tensor_argument("pos", pos, "positions [n_atoms, 3]")
    for name, value, kind in (("batch", batch, "system indices [n_atoms]"), ("box", box, "cells [n_systems, 3, 3]"),
                              ("q", q, "total charges [n_systems]")):
        if value is not None:
            check_tensor_argument(name, value, kind)
    if isinstance(properties, str) or not all(isinstance(p, str) for p in properties):
        raise TypeError(f"properties must be a collection of names such as ('energy', 'forces'), got {properties!r}")


def _check_memory(model: NeuralPotential, pos: Tensor, batch: Tensor, box: Optional[Tensor], n_systems: int) -> None:
    """Refuse a topology whose call cannot fit (:mod:`fastnnp.memory`); one host copy of the
    positions (open systems) or cells, at construction only."""
    cutoff, features, path, itemsize = model_footprint(model)
    sizes = torch.bincount(batch, minlength=n_systems).tolist()
    if box is None:
        positions = torch.split(pos.detach().to("cpu", torch.float64), sizes)
        volumes = system_volumes([p.numpy() for p in positions], None, cutoff)
    else:
        cells = box.detach().to("cpu", torch.float64).reshape(-1, 3, 3).expand(n_systems, 3, 3)
        volumes = system_volumes(None, list(cells.numpy()), cutoff)
    estimate = estimate_call_bytes(sizes, volumes, box is not None, cutoff, features, path, itemsize)
    check_fits(estimate, pos.device, len(batch), cutoff)


class GraphedStep:
    """An :class:`EnergyStep` replayed as a CUDA graph (CUDA devices only).

    The first :meth:`run` warms the step up on a side stream (planning its searches), then
    captures one call on static copies of ``pos`` and ``box``; later runs copy the new
    positions (and cell) in, replay, and settle the captured status. A status that is not 0
    (a replan: table widths, grids) drops the graph: that call's results come from an eager
    :meth:`EnergyStep.run` and the next run captures again. The returned tensors are the
    graph's own buffers, overwritten by the next replay: copy what you keep.
    """

    def __init__(self, step: EnergyStep, warmup: int = 3):
        if step.pos_meta[2].type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, got {step.pos_meta[2]}")
        self.step = step
        self.warmup = warmup
        self.captures = 0
        self._graph: Optional[torch.cuda.CUDAGraph] = None

    def run(self, pos: Tensor, box: Optional[Tensor] = None) -> EnergyDerivatives:
        if self._graph is None:
            self._capture(pos, box)
        with torch.no_grad():
            self._pos.copy_(pos)
            if box is not None:
                self._box.copy_(box)
        self._graph.replay()
        result, status = self._output
        if int(status) == 0:
            return result
        self._graph = None
        return self.step.run(pos, box)

    def _capture(self, pos: Tensor, box: Optional[Tensor]) -> None:
        self._pos = pos.detach().clone()
        self._box = None if box is None else box.detach().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step.run(self._pos, self._box)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._output = self.step(self._pos, self._box)
        self._graph = graph
        self.captures += 1
