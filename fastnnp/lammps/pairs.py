"""A fastnnp potential evaluated on LAMMPS's pair list (local and ghost atoms) instead of positions.

LAMMPS gives, per domain, the atoms it holds (``nlocal`` owned atoms first, then ghosts, ``ntotal``
in all), their element indices, and the pairs of its full neighbour list within the model's
cutoff: ``pair_i``, ``pair_j`` [P] and ``rij = x[pair_j] - x[pair_i]`` [P, 3]. The model runs on
all ``ntotal`` atoms with exactly these pairs (:class:`GivenPairs`, installed as the
representation's neighbour-search hook), and the energy of the owned atoms only is
differentiated with respect to ``rij``: the per-pair forces ``dE / d rij``, from which
LAMMPS assembles ``f[i] += fij``, ``f[j] -= fij`` and the virial ``-rij ⊗ fij``.

Several hops of message passing reach beyond one cutoff: either a ghost shell of
:func:`message_hops` cutoffs with the ghosts' own neighbour lists, or one cutoff and a ghost
exchange after every message-passing module (``comm``, :mod:`.exchange`).
"""

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from ..models.potential import NeuralPotential
from ..neighbors import NeighborList
from ..neighbors.edges import safe_norm
from .exchange import exchanged_outputs, message_modules


class PairResult(NamedTuple):
    """Per-atom energies of the owned atoms [nlocal] (without the model's per-system ``mean``),
    their sum (0-d), and the per-pair forces ``dE / d rij`` [P, 3] (E: the owned atoms' energy;
    with a ghost exchange, every domain's), all in the model's units."""

    atom_energy: Tensor
    energy: Tensor
    pair_forces: Tensor


def message_hops(model: NeuralPotential) -> int:
    """How many cutoffs away an atom's energy reaches (one per :func:`.exchange.message_modules`):
    without a per-layer ghost exchange, ghost atoms of a domain need neighbour lists, and the ghost
    shell must be ``message_hops × cutoff`` deep, for the owned atoms' energies to equal the whole
    system's. ValueError for representations fastnnp cannot run on LAMMPS pairs."""
    return len(message_modules(model.representation_model))


def check_lammps_model(model: NeuralPotential) -> None:
    """ValueError unless ``model`` can give per-atom energies from given pairs alone: a supported
    torch representation, a summed scalar head, and no prior with a neighbour search of its own
    (ZBL, D2) or acting after the reduction."""
    if not isinstance(model, NeuralPotential):
        raise TypeError(f"expected a fastnnp potential, got {type(model).__name__}")
    message_hops(model)
    if not model.has_atom_energies:
        raise ValueError(
            "LAMMPS needs per-atom energies: the model must have a summed scalar head and no priors acting "
            "after the reduction (ZBL, D2, Coulomb)"
        )
    searches = [m for m in model.modules() if hasattr(m, "neighbor_search") or hasattr(m, "table_search")]
    if searches != [model.representation_model] or not hasattr(model.representation_model, "neighbor_search"):
        raise ValueError("LAMMPS pair lists need the torch backend and no prior with its own neighbour search")


class GivenPairs:
    """A neighbour-search hook (same call as :func:`fastnnp.neighbors.neighbor_list`) that returns
    given pairs: receivers ``i``, senders ``j`` [P] and ``vec = x[i] - x[j]`` [P, 3] of a full,
    symmetric-or-not list (LAMMPS's: owned atoms list all neighbours, ghosts theirs where LAMMPS
    built ghost lists). Atoms ``>= listed`` have no list of their own: a pair to them is kept
    whole in a half list. Pairs outside ``[cutoff_lower, cutoff_upper)`` are dropped, as the
    search would; ``half`` keeps each pair once, ``loop`` adds one self loop per atom."""

    def __init__(self, i: Tensor, j: Tensor, vec: Tensor, n_atoms: int, listed: int):
        self.i, self.j, self.vec = i, j, vec
        self.n_atoms, self.listed = n_atoms, listed

    def __call__(
        self,
        pos: Tensor,
        batch: Tensor,
        cutoff_upper: float,
        cutoff_lower: float = 0.0,
        box: Optional[Tensor] = None,
        loop: bool = False,
        half: bool = False,
    ) -> NeighborList:
        i, j, vec = self.i, self.j, self.vec
        d = safe_norm(vec)
        keep = (d >= cutoff_lower) & (d < cutoff_upper)
        if half:
            keep &= (i < j) | (j >= self.listed)
        i, j, vec, d = i[keep], j[keep], vec[keep], d[keep]
        if loop:
            atoms = torch.arange(self.n_atoms, device=i.device)
            i, j = torch.cat([i, atoms]), torch.cat([j, atoms])
            vec = torch.cat([vec, vec.new_zeros(self.n_atoms, 3)])
            d = torch.cat([d, d.new_zeros(self.n_atoms)])
        image = torch.zeros(i.shape[0], 3, dtype=torch.long, device=i.device)
        return NeighborList(torch.stack([i, j]), vec, d, image)


@contextmanager
def _given_pairs(model: NeuralPotential, hook: GivenPairs) -> Iterator[None]:
    representation = model.representation_model
    search = representation.neighbor_search
    representation.neighbor_search = hook
    try:
        yield
    finally:
        representation.neighbor_search = search


def evaluate_pairs(
    model: NeuralPotential,
    z: Tensor,
    nlocal: int,
    pair_i: Tensor,
    pair_j: Tensor,
    rij: Tensor,
    comm: Optional[Any] = None,
) -> PairResult:
    """Run ``model`` on ``z.shape[0]`` atoms (``nlocal`` owned ones first, then ghosts) with
    LAMMPS's pairs (``pair_i``, ``pair_j`` [P] int, ``rij = x[j] - x[i]`` [P, 3] in the model's
    dtype and device). Ghost atoms have lists when some pair starts at one (``pair_style mliap
    unified model.pt 1``). With ``comm`` (the KOKKOS coupling's data: ``forward_exchange``,
    ``reverse_exchange``) every message-passing module's output is ghost-exchanged
    (:mod:`.exchange`) and the per-pair forces are derivatives of all domains' energy. Shapes
    and types are the caller's to check (:mod:`.unified`)."""
    n_atoms = z.shape[0]
    rij = rij.detach().requires_grad_(True)
    listed = n_atoms if bool((pair_i >= nlocal).any()) else nlocal
    hook = GivenPairs(pair_i.long(), pair_j.long(), -rij, n_atoms, listed)
    pos = torch.zeros(n_atoms, 3, dtype=rij.dtype, device=rij.device)
    batch = torch.zeros(n_atoms, dtype=torch.long, device=rij.device)
    anchor = torch.zeros((), dtype=rij.dtype, device=rij.device, requires_grad=True)
    exchange = nullcontext() if comm is None else exchanged_outputs(model.representation_model, comm, anchor, n_atoms)
    with torch.enable_grad(), _given_pairs(model, hook), exchange:
        # no input checks (positions are placeholders: only the pairs' vectors count; the atomic
        # numbers come from the element table); the mean's equal share is taken out again
        atoms_per_system = torch.full((1,), n_atoms, dtype=torch.long, device=rij.device)
        _, atom_energy = model.checked_energy_terms(z, pos, batch, None, None, 1, atoms_per_system)
        atom_energy = atom_energy[:nlocal] - model.mean / n_atoms
        energy = atom_energy.sum()
        pair_forces = None
        if energy.requires_grad:  # not so for a domain without pairs or exchanges
            # the anchor reaches every exchange: each domain runs all reverse exchanges, in step
            pair_forces, _ = torch.autograd.grad(energy, (rij, anchor), allow_unused=True)
    if pair_forces is None:
        pair_forces = torch.zeros_like(rij)
    return PairResult(atom_energy.detach(), energy.detach(), pair_forces)
