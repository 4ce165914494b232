"""The whole potential: representation -> output head -> priors -> energy, and forces."""

from typing import Callable, Optional, TypeVar

import torch
from torch import Tensor, nn

from ..priors import Prior
from ..status import StepStatus, is_planned
from ..validation import check_geometry, check_inputs, check_tensor_argument, tracing

T = TypeVar("T")
# Replans a call may need: one for the search's grid, one for the table's width.
MAX_REPLANS = 2
# The extra_args keys each prior reads (prior class name -> keys).
EXTRA_ARGS = {"Coulomb": ("partial_charges",)}


def _check_finite_outputs(y: Tensor, neg_dy: Tensor) -> None:
    """ValueError when the energy or a force is not finite (one host read): never a silent NaN."""
    if not bool(torch.isfinite(y).all() & torch.isfinite(neg_dy).all()):
        bad = (~torch.isfinite(neg_dy)).any(dim=1).nonzero().flatten().tolist()[:8]
        raise ValueError(
            f"the model gave a non-finite energy or forces (atoms {bad}) on finite input: a degenerate "
            "geometry or a checkpoint with non-finite weights"
        )


class NeuralPotential(nn.Module):
    """``model(z, pos, batch=None, box=None, q=None, s=None, extra_args=None, num_systems=None) ->
    (energy [n_systems, 1], neg_dy [n_atoms, 3])`` (TorchMD-Net's signature; :meth:`forward`).

    Same contract and arithmetic order as TorchMD-Net's ``TorchMD_Net``: per-atom output ×
    ``std``, atom-wise priors, reduction per system, + ``mean``, post-reduction priors; with
    ``derivative`` the second output is minus the gradient of the summed energy with respect
    to ``pos`` (forces), else ``None``. Outputs carry an autograd graph only in training
    mode or when ``pos`` or ``box`` require grad (e.g. for stress); else they are detached. Units are the checkpoint's (TorchMD-Net models carry
    none). ``default_box`` [3, 3] (the checkpoint's ``box_vecs``) is the representation's box
    when none is given; priors and the output head, as in TorchMD-Net, only see the box passed
    in the call. A representation's own per-atom energies (its ``extra_energy`` after a call,
    TensorNet2's ZBL repulsion) are added to the head's output before the ``std`` scaling.
    """

    def __init__(
        self,
        representation_model: nn.Module,
        output_model: nn.Module,
        prior_model: Optional[list[nn.Module]] = None,
        derivative: bool = True,
        max_z: int = 100,
        dtype: torch.dtype = torch.float32,
        default_box: Optional[Tensor] = None,
    ):
        super().__init__()
        self.representation_model = representation_model
        self.output_model = output_model
        self.prior_model = nn.ModuleList(prior_model) if prior_model else None
        self.derivative = derivative
        self.max_z = max_z
        self.register_buffer("mean", torch.scalar_tensor(0, dtype=dtype))
        self.register_buffer("std", torch.scalar_tensor(1, dtype=dtype))
        self.register_buffer("default_box", default_box, persistent=False)
        self._one_system: Optional[Tensor] = None  # the batch of a call without one, kept (see _checked)
        # (the representation, its submodules with a table_search) for _planned_searches: walked once
        self._search_owners: Optional[tuple] = None

    @property
    def dtype(self) -> torch.dtype:
        return self.std.dtype

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Optional[Tensor] = None,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
        s: Optional[Tensor] = None,
        extra_args: Optional[dict[str, Tensor]] = None,
        num_systems: Optional[int] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """TorchMD-Net's ``TorchMD_Net.forward`` signature. ``s`` (per-atom spins) is read by no
        fastnnp model, so a value is an error (TorchMD-Net's models ignore it); ``extra_args``
        holds the per-atom inputs priors read (:data:`EXTRA_ARGS`: the Coulomb prior's
        ``partial_charges``), any other key is an error; ``num_systems`` (a Python int) is the
        number of systems, checked against ``batch``, and under ``torch.compile`` /
        ``torch.export`` the output size that cannot be read from ``batch`` there."""
        if s is not None:
            raise ValueError(
                "s (per-atom spins) is read by no fastnnp model, as by none of TorchMD-Net's "
                "(TensorNet, TensorNet2, ET, GN ignore it): pass s=None"
            )
        self._check_extra_args(extra_args)
        if tracing() and getattr(self, "trace_refusal", None):
            raise ValueError(f"torch.compile / torch.export cannot trace this model: {self.trace_refusal}")
        if not tracing():
            z, pos, batch, box, q = self._autograd_ready(z, pos, batch, box, q)
        z, batch, q, n_systems = self._checked(z, pos, batch, box, q, num_systems)
        keep_graph = self.training or pos.requires_grad or (box is not None and box.requires_grad)
        if self.derivative and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        with torch.set_grad_enabled(self.derivative or torch.is_grad_enabled()):
            y = self.settled(lambda: self._energy(z, pos, batch, box, q, extra_args, n_systems), self.settle_for(pos, batch, box))
            if not self.derivative:  # traced: keep the graph, so that gradients flow through an exported program
                return (y, None) if keep_graph or tracing() else (y.detach(), None)
            (dy,) = torch.autograd.grad(y.sum(), pos, create_graph=keep_graph, allow_unused=True)
        neg_dy = torch.zeros_like(pos) if dy is None else -dy
        if not tracing():
            _check_finite_outputs(y, neg_dy)
        return (y, neg_dy) if keep_graph else (y.detach(), neg_dy)

    def _autograd_ready(self, *inputs: Optional[Tensor]) -> tuple[Optional[Tensor], ...]:
        """``inputs`` usable for the forces: RuntimeError under ``torch.inference_mode()`` (it
        switches autograd off, and forces are a gradient); tensors made there (inference
        tensors, which autograd cannot save) are copied into normal ones."""
        if not self.derivative:
            return inputs
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "forces are a gradient and torch.inference_mode() switches autograd off: call the model "
                "under torch.no_grad() instead (fastnnp enables grad for the forces only), or load it "
                "with derivative=False for energies"
            )
        return tuple(x.clone() if isinstance(x, Tensor) and x.is_inference() else x for x in inputs)

    def _check_extra_args(self, extra_args: Optional[dict]) -> None:
        """TypeError / ValueError unless every key of ``extra_args`` is read by one of the priors."""
        if extra_args is None:
            return
        if not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict of str -> Tensor, got {type(extra_args).__name__}")
        read = {key for prior in self.prior_model or () for key in EXTRA_ARGS.get(type(prior).__name__, ())}
        unread = sorted(set(extra_args) - read)
        if unread:
            raise ValueError(
                f"extra_args {unread} are read by nothing in this model; it reads "
                f"{sorted(read) if read else 'no extra_args'} (the Coulomb prior reads 'partial_charges')"
            )
        for key, value in extra_args.items():
            check_tensor_argument(f"extra_args[{key!r}]", value, "per-atom values")

    def _checked(self, z, pos, batch, box, q, num_systems: Optional[int] = None) -> tuple[Tensor, Tensor, Optional[Tensor], int]:
        """Validated inputs: z and batch as int64 (batch defaults to one system), q [n_systems]."""
        if batch is None:
            if not isinstance(z, Tensor):
                check_tensor_argument("z", z, "integer atomic numbers [n_atoms]")
            batch = self._one_system_batch(z.shape[0] if z.dim() else 0, z.device)
            num_systems = 1 if num_systems is None and tracing() else num_systems
        n_systems = check_inputs(z, pos, batch, box, q, self.max_z, self.dtype, self.std.device, num_systems,
                                 geometry=not self.flags_close_pairs)
        if q is not None:
            q = q.reshape(n_systems).to(self.dtype)
        return z.long(), batch.long(), q, n_systems

    def _one_system_batch(self, n_atoms: int, device: torch.device) -> Tensor:
        """Zeros [n_atoms] int64: the same tensor while n_atoms and device stay (a planned search
        recognises its topology by the batch tensor's identity, so calls without a batch do not
        plan again), a new one after a change or an in-place edit."""
        kept = self._one_system
        if tracing() or kept is None or kept.shape[0] != n_atoms or kept.device != device or kept._version != 0:
            kept = torch.zeros(n_atoms, dtype=torch.long, device=device)
            if not tracing():
                self._one_system = kept
        return kept

    def partial_charges(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Optional[Tensor] = None,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
    ) -> Optional[Tensor]:
        """Per-atom partial charges [n_atoms] (elementary charges) where the representation
        predicts them (TensorNet2), else None; no autograd graph.

        The mean of the predictions' charge channels, weighted by the head's ``qweights``
        (``ScalarPlusWeightedCoulomb``; equal weights for other heads): where every channel
        sums to a system's total charge ``q``, so do these.
        """
        predict = getattr(self.representation_model, "predicted_charges", None)
        if predict is None:
            return None
        z, batch, q, _ = self._checked(z, pos, batch, box, q)
        with torch.no_grad():
            channels = self.settled(lambda: predict(z, pos, batch, self.default_box if box is None else box, q),
                                    self.settle_for(pos, batch, box))
        weights = getattr(self.output_model, "qweights", None)
        if weights is None:
            return channels.mean(1)
        return channels @ weights / weights.sum()

    def search_status(self) -> Optional[Tensor]:
        """The device status (0-d int32, :class:`fastnnp.status.StepStatus` bits) of the planned
        neighbour searches the last call ran, OR-ed; None when the model has none."""
        statuses = [hook.status for hook in self._planned_searches() if hook.status is not None]
        if not statuses:
            return None
        status = statuses[0]
        for other in statuses[1:]:
            status = status | other
        return status

    @property
    def flags_close_pairs(self) -> bool:
        """Whether the representation's kernels flag atoms closer than MIN_DISTANCE on the device
        (:attr:`StepStatus.CLOSE`), so that a call needs no search of its own for them."""
        return bool(getattr(self.representation_model, "flags_close_pairs", False))

    def settle_for(self, pos: Tensor, batch: Tensor, box: Optional[Tensor]) -> Callable[[object], bool]:
        """:meth:`settle` of the searches' status after a call on ``pos``, ``batch``, ``box``
        (a ``settle`` for :meth:`settled`)."""
        return lambda _: self.settle(self.search_status(), (pos, batch, box))

    def settle(self, status: Optional[Tensor], inputs: Optional[tuple] = None) -> bool:
        """Read a call's ``status`` (one host sync) and act on it: where atoms were flagged
        closer than MIN_DISTANCE, ValueError naming them (``inputs``: the call's pos, batch,
        box, searched again here); every planned search plans again at its next call where it
        says so. True when the call's results stand, False when they are incomplete (a table
        overflowed, a cell outgrew its grid) and the call must run again."""
        if status is None:
            return True
        flags = StepStatus(int(status))
        if flags & StepStatus.CLOSE and inputs is not None:
            check_geometry(*inputs)  # names the atoms (a pair at the float32 edge of MIN_DISTANCE may pass)
        if flags & (StepStatus.OVERFLOW | StepStatus.STALE | StepStatus.DRIFT):
            for hook in self._planned_searches():
                hook.replan(flags)
        return not flags.recompute

    def settled(self, compute: Callable[[], T], settle: Callable[[T], bool]) -> T:
        """``compute()`` run until ``settle(result)`` lets it stand (:meth:`settle_for` the
        call's inputs, or a step's own): once, or again after a replan. Each replan gives the
        searches room for what they found, so a second run stands; more than
        :data:`MAX_REPLANS` is an error, never a wrong result."""
        for _ in range(MAX_REPLANS + 1):
            result = compute()
            if settle(result):
                return result
        raise RuntimeError(f"the neighbour search still overflowed after {MAX_REPLANS} replans")

    def _planned_searches(self) -> list:
        """The Triton representations' planned search hooks (:func:`fastnnp.status.is_planned`)."""
        owners = self._search_owners
        if owners is None or owners[0] is not self.representation_model:
            owners = (self.representation_model, [m for m in self.modules() if hasattr(m, "table_search")])
            self._search_owners = owners
        hooks = (module.table_search for module in owners[1])
        return [hook for hook in hooks if is_planned(hook)]

    @property
    def has_atom_energies(self) -> bool:
        """Whether the energy is a sum of per-atom terms: a summed scalar head and no priors
        acting after the reduction (such as ZBL, D2, Coulomb)."""
        head = type(self.output_model).__name__ in ("Scalar", "EquivariantScalar")
        summed = getattr(self.output_model, "reduce_op", None) == "add"
        atomwise = all(type(p).post_reduce is Prior.post_reduce for p in self.prior_model or ())
        return head and summed and atomwise

    def energy_terms(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Optional[Tensor] = None,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Energy per system [n_systems, 1] and, where :attr:`has_atom_energies`, per atom
        [n_atoms] (else None); no derivative is taken and the autograd graph is kept.

        The per-atom terms sum to the system energy: each atom gets its head output × ``std``
        plus its atom-wise priors, and an equal share of the per-system ``mean``.
        """
        z, batch, q, n_systems = self._checked(z, pos, batch, box, q)
        atoms_per_system = torch.bincount(batch, minlength=n_systems) if self.has_atom_energies else None
        return self.settled(lambda: self.checked_energy_terms(z, pos, batch, box, q, n_systems, atoms_per_system),
                            self.settle_for(pos, batch, box))

    def checked_energy_terms(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor,
        box: Optional[Tensor],
        q: Optional[Tensor],
        n_systems: int,
        atoms_per_system: Optional[Tensor],
    ) -> tuple[Tensor, Optional[Tensor]]:
        """:meth:`energy_terms` of inputs already validated (as :meth:`_checked` returns them),
        with ``atoms_per_system`` [n_systems] given where :attr:`has_atom_energies` (else None):
        no checks, no host syncs of its own, and the searches' status not read (the caller
        settles it, :meth:`settle`)."""
        x = self._atom_terms(z, pos, batch, box, q, None)
        y = self._system_energy(x, z, pos, batch, box, None, n_systems)
        if atoms_per_system is None:
            return y, None
        return y, x[:, 0] + (self.mean / atoms_per_system.to(x.dtype))[batch]

    def _energy(self, z, pos, batch, box, q, extra_args, n_systems: int) -> Tensor:
        x = self._atom_terms(z, pos, batch, box, q, extra_args)
        return self._system_energy(x, z, pos, batch, box, extra_args, n_systems)

    def _atom_terms(self, z, pos, batch, box, q, extra_args) -> Tensor:
        """Per-atom outputs × std with the atom-wise priors applied [n_atoms, 1]."""
        representation_box = self.default_box if box is None else box
        x, v = self.representation_model(z, pos, batch, box=representation_box, q=q)
        # The head sees the call's box only (TorchMD-Net's order: box_vecs is the representation's).
        x = self.output_model.pre_reduce(x, v, z, pos, batch, box=box)
        extra = getattr(self.representation_model, "extra_energy", None)
        if extra is not None:  # per-atom terms of the representation's own (TensorNet2's ZBL)
            x = x + extra
            self.representation_model.extra_energy = None  # read once: the module keeps no graph (copyable)
        x = x * self.std
        for prior in self.prior_model or ():
            x = prior.pre_reduce(x, z, pos, batch, extra_args)
        return x

    def _system_energy(self, x, z, pos, batch, box, extra_args, n_systems: int) -> Tensor:
        """Reduce per-atom terms, add ``mean``, apply the post-reduction priors [n_systems, 1]."""
        x = self.output_model.reduce(x, batch, n_systems)
        y = self.output_model.post_reduce(x + self.mean)
        for prior in self.prior_model or ():
            y = prior.post_reduce(y, z, pos, batch, box, extra_args)
        return y
