"""The LAMMPS ML-IAP unified model: ``pair_style mliap unified model-mliap.pt 0`` (or ``1``, below).

LAMMPS's ML-IAP Python coupling (``src/ML-IAP/mliap_unified_couple.pyx`` and its KOKKOS twin)
loads a pickled object (``torch.load`` of a ``.pt`` file) and reads ``element_types``,
``rcutfac`` (half the pair cutoff), ``ndescriptors`` and ``nparams``; every force evaluation
calls ``compute_forces(data)`` with the domain's atoms and pairs (:mod:`.pairs`). This module
writes back the owned atoms' energies (``data.eatoms``, ``data.energy``) and the per-pair forces
(``update_pair_forces`` / ``update_pair_forces_gpu``), from which LAMMPS assembles the forces and
the virial.

Message passing across domains, two ways (:meth:`FastNNPUnified.compute_forces` picks):

* per-layer ghost exchange, where the coupling offers it (KOKKOS, LAMMPS 2025+:
  ``data.forward_exchange``): one cutoff of ghosts, no ghost neighbour lists; every
  message-passing module's output has its ghost rows filled from their owners (:mod:`.exchange`),
  so a domain's per-pair forces are derivatives of every domain's energy. ``pair_style mliap
  unified model.pt 0``, no ``comm_modify``.
* ghost shell, elsewhere (the plain coupling): the ghosts' own neighbour lists (``pair_style
  mliap unified model.pt 1``) and a shell of ``hops × cutoff`` (``comm_modify cutoff``), so the
  owned atoms' energies are exact from this domain alone. LAMMPS counts a pair's force only
  where its first atom is owned (``i < nlocal``); the forces of the pairs starting at a ghost are
  added to ``data.f`` of their two atoms here, LAMMPS sums ghost forces into their owners
  (``newton on``) and takes the global virial from them (``f · r``; per-atom virials miss
  those pairs). The KOKKOS coupling builds no ghost lists: without ``forward_exchange`` a
  multi-hop model is refused there.
"""

from typing import Any, Optional, Sequence

import torch
from ase.data import atomic_numbers

from ..models.potential import NeuralPotential
from .pairs import check_lammps_model, evaluate_pairs, message_hops


class FastNNPUnified:
    """A fastnnp potential as a LAMMPS ML-IAP unified model (the ``MLIAPUnified`` contract).

    Args:
        model: a fastnnp potential (``fastnnp.load_model(..., backend="torch")``) with per-atom
            energies (:func:`.pairs.check_lammps_model`).
        elements: chemical symbols, in the order of LAMMPS's ``pair_coeff * * H C N O`` names;
            each maps LAMMPS's element index to its atomic number.

    Units are the model's (give LAMMPS ``units metal`` for eV and Å models). The model's per-system
    ``mean`` (:attr:`energy_offset`) is a constant LAMMPS cannot split over domains: LAMMPS's
    energies leave it out (forces and virial do not depend on it).
    """

    def __init__(self, model: NeuralPotential, elements: Sequence[str]):
        check_lammps_model(model)
        self.element_types = _checked_elements(elements, model.max_z)
        self.model = model.eval().requires_grad_(False)
        self.cutoff = float(model.representation_model.cutoff_upper)
        self.hops = message_hops(model)
        self.rcutfac = 0.5 * self.cutoff  # LAMMPS's pair cutoff is 2 × rcutfac
        self.ndescriptors = 1
        self.nparams = 1
        self.interface: Any = None  # set by LAMMPS's coupling
        self.atomic_numbers = torch.tensor([atomic_numbers[e] for e in self.element_types], dtype=torch.long)
        self.energy_offset = float(model.mean)
        self._exchanges: Optional[int] = None  # ghost exchanges per force call, once counted

    @property
    def ghost_cutoff(self) -> float:
        """The ghost shell depth (model length units) the owned atoms' energies need: hops × cutoff.
        ``comm_modify cutoff`` must be at least this plus the neighbour skin."""
        return self.hops * self.cutoff

    @property
    def device(self) -> torch.device:
        return self.model.std.device

    def compute_descriptors(self, data: Any) -> None:
        """Not used: the model has no separate descriptor step."""

    def compute_gradients(self, data: Any) -> None:
        """Not used: forces come from :meth:`compute_forces`."""

    def compute_forces(self, data: Any) -> None:
        """Energies and per-pair forces of one domain, written into LAMMPS's ``data``."""
        ntotal, npairs = int(data.ntotal), int(data.npairs)
        nlocal = int(data.nlocal if hasattr(data, "nlocal") else data.nlistatoms)  # older KOKKOS: no nlocal
        comm = data if self.hops > 1 and hasattr(data, "forward_exchange") else None
        data.energy = 0.0
        if ntotal == 0 and comm is not None:  # no atoms here, yet every rank joins every exchange
            self._idle_exchanges(comm)
            return
        if nlocal == 0 and comm is None:
            return
        rij = torch.as_tensor(data.rij) if npairs else torch.zeros(0, 3, dtype=torch.float64)  # NULL arrays: None
        lammps_device = rij.device  # the KOKKOS coupling's arrays may live on a GPU
        if comm is not None and lammps_device != self.device and npairs:
            raise ValueError(
                f"LAMMPS's arrays are on {lammps_device}, the model on {self.device}: the ghost exchange needs "
                f"both on one device (fastnnp lammps-export ... --device {lammps_device.type})"
            )
        elems = self._as_tensor(data.elems, torch.long)
        z = self.atomic_numbers.to(self.device)[self._checked_elems(elems, ntotal)]
        pair_i = self._as_tensor(data.pair_i if npairs else [], torch.long)
        pair_j = self._as_tensor(data.pair_j if npairs else [], torch.long)
        rij = self._as_tensor(rij, self.model.dtype).reshape(npairs, 3)
        if comm is None:
            self._check_ghost_lists(data, pair_i, nlocal, ntotal)
        result = evaluate_pairs(self.model, z, nlocal, pair_i, pair_j, rij, comm)
        if int(data.nlistatoms):
            _write_energies(data, result.atom_energy, nlocal)
        data.energy = float(result.energy)
        if npairs:
            fij = result.pair_forces.to(device=lammps_device, dtype=torch.float64).contiguous()
            self._write_pair_forces(data, pair_i.to(lammps_device), pair_j.to(lammps_device), fij, nlocal)

    def _idle_exchanges(self, comm: Any) -> None:
        """The exchanges of a force call, on no atoms: as many forward then reverse exchanges as
        the model makes (counted once, on one atom without neighbours)."""
        if getattr(self, "_exchanges", None) is None:
            counter = _CountedExchanges()
            none = torch.zeros(0, dtype=torch.long, device=self.device)
            rij = torch.zeros(0, 3, dtype=self.model.dtype, device=self.device)
            evaluate_pairs(self.model, self.atomic_numbers[:1].to(self.device), 1, none, none, rij, counter)
            self._exchanges = counter.forward
        empty = torch.zeros(0, dtype=self.model.dtype, device=self.device)
        for exchange in [comm.forward_exchange] * self._exchanges + [comm.reverse_exchange] * self._exchanges:
            exchange(empty, torch.empty_like(empty), 0)

    def _as_tensor(self, array: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array).to(device=self.device, dtype=dtype)

    def _checked_elems(self, elems: torch.Tensor, ntotal: int) -> torch.Tensor:
        if elems.shape[0] < ntotal or bool(((elems[:ntotal] < 0) | (elems[:ntotal] >= len(self.element_types))).any()):
            raise ValueError(
                f"LAMMPS element indices must lie in 0..{len(self.element_types) - 1} "
                f"({' '.join(self.element_types)}); map every atom type in pair_coeff (no NULL types)"
            )
        return elems[:ntotal]

    def _check_ghost_lists(self, data: Any, pair_i: torch.Tensor, nlocal: int, ntotal: int) -> None:
        """Without a ghost exchange, a model with several hops needs the ghosts' own neighbour
        lists (``pair_style mliap unified <file> 1``); without, the owned atoms' energies would be wrong."""
        if self.hops == 1 or ntotal == nlocal or bool((pair_i >= nlocal).any()):
            return
        if hasattr(data, "update_pair_forces_gpu"):
            raise RuntimeError(
                f"this model passes messages over {self.hops} hops of {self.cutoff:g}, and this LAMMPS's KOKKOS "
                "ML-IAP coupling has no forward_exchange (LAMMPS 2025+) and builds no ghost neighbour lists: "
                "update LAMMPS, or run without KOKKOS with 'pair_style mliap unified <file> 1' and "
                f"'comm_modify cutoff {self.ghost_cutoff:g}+skin'"
            )
        raise RuntimeError(
            f"this model passes messages over {self.hops} hops of {self.cutoff:g}: LAMMPS must give ghost atoms "
            f"neighbour lists and a ghost shell of {self.ghost_cutoff:g} plus the skin. Use "
            f"'pair_style mliap unified <file> 1' and 'comm_modify cutoff {self.ghost_cutoff:g}+skin'"
        )

    def _write_pair_forces(self, data: Any, pair_i, pair_j, fij: torch.Tensor, nlocal: int) -> None:
        kokkos = hasattr(data, "update_pair_forces_gpu")
        counted = int(data.nlistatoms) if kokkos else nlocal
        if kokkos:  # takes the tensor's memory, on LAMMPS's device
            data.update_pair_forces_gpu(fij)
        else:
            data.update_pair_forces(fij.numpy())
        rest = pair_i >= counted
        if bool(rest.any()):
            forces = torch.zeros(int(data.ntotal), 3, dtype=torch.float64, device=fij.device)
            forces.index_add_(0, pair_i[rest], fij[rest]).index_add_(0, pair_j[rest], -fij[rest])
            target = torch.as_tensor(data.f)  # a view of LAMMPS's force array [ntotal, 3]
            target.view(-1, 3)[: forces.shape[0]] += forces

    def __repr__(self) -> str:
        return (
            f"FastNNPUnified({type(self.model.representation_model).__name__}, elements={self.element_types}, "
            f"cutoff={self.cutoff:g}, hops={self.hops}, dtype={self.model.dtype})"
        )


class _CountedExchanges:
    """Exchanges on one process without ghosts (copies), counted."""

    def __init__(self):
        self.forward = self.reverse = 0

    def forward_exchange(self, copy_from: torch.Tensor, copy_to: torch.Tensor, vec_len: int) -> None:
        self.forward += 1
        copy_to.copy_(copy_from)

    def reverse_exchange(self, copy_from: torch.Tensor, copy_to: torch.Tensor, vec_len: int) -> None:
        self.reverse += 1
        copy_to.copy_(copy_from)


def _write_energies(data: Any, atom_energy: torch.Tensor, nlocal: int) -> None:
    """``data.eatoms``: a writable view in the KOKKOS coupling, a write-only property (the whole
    ``nlistatoms`` array) in the plain one; entries past the owned atoms get 0."""
    values = torch.zeros(int(data.nlistatoms), dtype=torch.float64)
    values[:nlocal] = atom_energy.to(torch.float64).cpu()
    try:
        view = torch.as_tensor(data.eatoms)
    except AttributeError:  # plain coupling: no getter
        data.eatoms = values.numpy()
        return
    view.copy_(values.to(view.device))


def checked_symbols(elements: Sequence[str]) -> list[str]:
    """The symbols as a list; ValueError for an empty list, an unknown symbol or a repeat."""
    names = list(elements)
    if not names:
        raise ValueError("give the chemical symbols of LAMMPS's element names, e.g. --elements H C N O")
    for name in names:
        if name not in atomic_numbers or name == "X":
            raise ValueError(f"unknown chemical symbol {name!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"elements repeated: {' '.join(repeated)}")
    return names


def _checked_elements(elements: Sequence[str], max_z: int) -> list[str]:
    """:func:`checked_symbols`, and ValueError for an element the model cannot take (Z >= max_z)."""
    names = checked_symbols(elements)
    for name in names:
        if atomic_numbers[name] >= max_z:
            raise ValueError(f"element {name} (Z={atomic_numbers[name]}) is outside the model's range (Z < {max_z})")
    return names
