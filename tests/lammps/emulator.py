"""What LAMMPS hands an ML-IAP unified model, built without LAMMPS, and how it uses the answer.

A periodic (triclinic) cell is cut into a grid of domains in fractional coordinates. Each domain
holds its owned atoms (``nlocal``, first) and ghosts: every periodic image of any atom within the
communication cutoff of the domain, measured as LAMMPS does for triclinic boxes, per lattice
direction in units of the cell height (``Comm::setup``). Its full neighbour list lists, for each
owned atom and, with ghost lists (``pair_style mliap unified <file> 1``), each ghost, all other
atoms of the domain with ``|rij|² < cutoff²``, ``rij = x[j] - x[i]`` (``MLIAPData::generate_neighdata``).

Three data objects mirror LAMMPS's couplings: :class:`PlainData` (``mliap_unified_couple.pyx``:
``eatoms`` write-only, ``update_pair_forces`` counting pairs with ``i < nlocal``),
:class:`KokkosData` (``mliap_unified_couple_kokkos.pyx``: ``eatoms`` a view, ``update_pair_forces_gpu``
counting ``i < nlistatoms``) and :class:`ExchangeData` (the KOKKOS one of LAMMPS 2025+, with
``forward_exchange`` / ``reverse_exchange`` across domains run side by side, :class:`Exchange`).
:func:`run_domains` and :func:`run_exchanging_domains` then do what LAMMPS does after the model's
call: the global virial from ``f · r`` of owned and ghost atoms (``virial_fdotr_compute``), ghost
forces summed into their owners (reverse communication, ``newton on``), energies summed over domains.
"""

import copy
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

ELEMENTS = ["H", "C", "N", "O"]


@dataclass
class Domain:
    nlocal: int
    owner: np.ndarray  # [ntotal] index of the atom in the whole cell
    positions: np.ndarray  # [ntotal, 3]
    elems: np.ndarray  # [ntotal] int32 index into the element list
    pair_i: np.ndarray  # [P] int32
    pair_j: np.ndarray  # [P] int32
    rij: np.ndarray  # [P, 3] float64


def split_domains(
    atoms: Atoms, grid: tuple, cutoff: float, ghost_cutoff: float, ghost_lists: bool, elements: list = ELEMENTS
) -> list[Domain]:
    """The domains of ``atoms`` (fully periodic) on a ``grid`` (na, nb, nc) of equal fractional
    slabs; element indices into ``elements`` (``pair_coeff * * H C N O``)."""
    cell = atoms.cell.array
    frac = atoms.cell.scaled_positions(atoms.positions) % 1.0
    volume = abs(np.linalg.det(cell))
    heights = np.array([volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)])
    margin = ghost_cutoff / heights  # the ghost shell in fractional units, per direction
    reach = np.ceil(margin).astype(int) + 1
    shifts = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])))
    images = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)  # [S * N, 3]
    image_owner = np.tile(np.arange(len(atoms)), len(shifts))
    unshifted = np.repeat((shifts == 0).all(1), len(atoms))
    symbols = atoms.get_chemical_symbols()
    elems_of = np.array([elements.index(s) for s in symbols], dtype=np.int32)
    domains = []
    for index in itertools.product(*[range(n) for n in grid]):
        lo, hi = np.array(index) / np.array(grid), (np.array(index) + 1) / np.array(grid)
        inside = ((images >= lo) & (images < hi)).all(1)
        local = inside & unshifted
        ghost = ((images >= lo - margin) & (images < hi + margin)).all(1) & ~local
        chosen = np.concatenate([np.flatnonzero(local), np.flatnonzero(ghost)])
        positions = images[chosen] @ cell
        nlocal = int(local.sum())
        listed = len(chosen) if ghost_lists else nlocal
        pair_i, pair_j, rij = _full_list(positions, listed, cutoff)
        domains.append(Domain(nlocal, image_owner[chosen], positions, elems_of[image_owner[chosen]], pair_i, pair_j, rij))
    return domains


def _full_list(positions: np.ndarray, listed: int, cutoff: float):
    delta = positions[None, :, :] - positions[:listed, None, :]  # x[j] - x[i]
    rsq = (delta * delta).sum(2)
    rsq[np.arange(listed), np.arange(listed)] = np.inf
    i, j = np.nonzero(rsq < cutoff * cutoff)
    return i.astype(np.int32), j.astype(np.int32), np.ascontiguousarray(delta[i, j])


class _Data:
    """The fields every coupling offers."""

    def __init__(self, domain: Domain):
        self.nlocal = domain.nlocal
        self.ntotal = len(domain.owner)
        self.nlistatoms = domain.nlocal
        self.npairs = len(domain.pair_i)
        self.elems = domain.elems
        self.pair_i, self.pair_j, self.rij = domain.pair_i, domain.pair_j, domain.rij
        self.f = np.zeros((self.ntotal, 3))
        self.energy_value = None
        self.eatoms_value = np.full(self.nlistatoms, np.nan)

    def _add_pair_forces(self, fij: np.ndarray, counted: int) -> None:
        assert fij.dtype == np.float64 and fij.shape == (self.npairs, 3) and fij.flags.c_contiguous
        mask = self.pair_i < counted
        np.add.at(self.f, self.pair_i[mask], fij[mask])
        np.add.at(self.f, self.pair_j[mask], -fij[mask])

    def _set_energy(self, value) -> None:
        self.energy_value = float(value)

    energy = property(fset=_set_energy)


class PlainData(_Data):
    """``mliap_unified_couple.pyx``: write-only ``eatoms``, host ``update_pair_forces``."""

    def _set_eatoms(self, value) -> None:
        value = np.asarray(value, dtype=np.float64)
        assert value.shape == (self.nlistatoms,)
        self.eatoms_value = value.copy()

    eatoms = property(fset=_set_eatoms)

    def update_pair_forces(self, fij) -> None:
        self._add_pair_forces(np.asarray(fij), self.nlocal)


class KokkosData(_Data):
    """``mliap_unified_couple_kokkos.pyx`` on the host: ``eatoms`` a view, ``update_pair_forces_gpu``
    taking the tensor's memory, pairs counted for ``i < nlistatoms``."""

    @property
    def eatoms(self) -> np.ndarray:
        return self.eatoms_value

    def update_pair_forces_gpu(self, fij) -> None:
        self._add_pair_forces(fij.numpy(), self.nlistatoms)


class Exchange:
    """LAMMPS's forward and reverse communication of per-atom arrays between domains that run side
    by side (one thread each): ``forward``: ``dst = src``, ghost rows from their owners' rows;
    ``reverse``: ``dst = src``, ghost rows added into their owners' rows, ghost rows zeroed."""

    def __init__(self, domains: list[Domain]):
        self.domains = domains
        self.barrier = threading.Barrier(len(domains), timeout=120)
        self.posted: list = [None] * len(domains)
        self.n_atoms = 1 + max((int(d.owner.max()) for d in domains if len(d.owner)), default=-1)

    def forward(self, k: int, src: torch.Tensor, dst: torch.Tensor, width: int) -> None:
        domain, src, dst = self.domains[k], _rows(src, width), _rows(dst, width)
        assert src.shape == dst.shape == (len(domain.owner), width) and (width == 0 or dst.data_ptr() != src.data_ptr())
        dst.copy_(src)
        self._post(k, domain.owner[: domain.nlocal], src[: domain.nlocal])
        if len(domain.owner) > domain.nlocal:
            table = src.new_full((self.n_atoms, width), float("nan"))
            for owner, rows in self.posted:
                if len(owner):
                    table[owner] = rows
            dst[domain.nlocal:] = table[domain.owner[domain.nlocal:]]
        self.barrier.wait()  # nobody posts again before all have read

    def reverse(self, k: int, src: torch.Tensor, dst: torch.Tensor, width: int) -> None:
        domain, src, dst = self.domains[k], _rows(src, width), _rows(dst, width)
        assert src.shape == dst.shape == (len(domain.owner), width) and (width == 0 or dst.data_ptr() != src.data_ptr())
        dst.copy_(src)
        self._post(k, domain.owner[domain.nlocal:], src[domain.nlocal:])
        if domain.nlocal:
            sums = src.new_zeros((self.n_atoms, width))
            for owner, rows in self.posted:
                if len(owner):
                    sums.index_add_(0, owner, rows)
            dst[: domain.nlocal] += sums[domain.owner[: domain.nlocal]]
        dst[domain.nlocal:] = 0
        self.barrier.wait()

    def _post(self, k: int, owner: np.ndarray, rows: torch.Tensor) -> None:
        self.posted[k] = (torch.as_tensor(owner, dtype=torch.long), rows.clone())
        self.barrier.wait()


def _rows(array: torch.Tensor, width: int) -> torch.Tensor:
    """``array`` as [rows, width] (a view: LAMMPS reads and writes its memory)."""
    return array.view(array.shape[0] if array.dim() else 0, width)


class ExchangeData(KokkosData):
    """The KOKKOS coupling of LAMMPS 2025+: :class:`KokkosData` with ``forward_exchange`` and
    ``reverse_exchange`` (``mliap_data_kokkos.h``), counted."""

    def __init__(self, domain: Domain, exchange: Exchange, index: int):
        super().__init__(domain)
        self.exchange, self.index = exchange, index
        self.forward_calls = self.reverse_calls = 0

    def forward_exchange(self, copy_from, copy_to, vec_len) -> None:
        self.forward_calls += 1
        self.exchange.forward(self.index, copy_from, copy_to, vec_len)

    def reverse_exchange(self, copy_from, copy_to, vec_len) -> None:
        self.reverse_calls += 1
        self.exchange.reverse(self.index, copy_from, copy_to, vec_len)


@dataclass
class Totals:
    energy: float
    atom_energies: np.ndarray  # [N]
    forces: np.ndarray  # [N, 3]
    virial: np.ndarray  # [3, 3], LAMMPS's sign: sum of r ⊗ f
    pair_virial: np.ndarray  # [3, 3], -sum of rij ⊗ fij over all pairs, from the per-pair forces
    data: list  # the domains' data objects


def run_domains(unified, atoms: Atoms, domains: list[Domain], data_class=PlainData) -> Totals:
    """Call ``unified.compute_forces`` on every domain, one after the other, and assemble the
    results as LAMMPS does."""
    datas = [data_class(domain) for domain in domains]
    captured = [_capture_pair_forces(data) for data in datas]
    for data in datas:
        unified.compute_forces(data)
    return _assemble(atoms, domains, datas, captured)


def run_exchanging_domains(unified, atoms: Atoms, domains: list[Domain]) -> Totals:
    """Every domain its own copy of ``unified`` (as every MPI rank loads the file), all run at once
    with :class:`ExchangeData`, and the results assembled as LAMMPS does."""
    exchange = Exchange(domains)
    datas = [ExchangeData(domain, exchange, k) for k, domain in enumerate(domains)]
    captured = [_capture_pair_forces(data) for data in datas]

    def compute(data: ExchangeData) -> None:
        try:
            copy.deepcopy(unified).compute_forces(data)
        except BaseException:
            exchange.barrier.abort()  # the other domains fail at their next exchange, not hang
            raise

    with ThreadPoolExecutor(len(domains)) as pool:
        for future in [pool.submit(compute, data) for data in datas]:
            future.result()
    return _assemble(atoms, domains, datas, captured)


def _assemble(atoms: Atoms, domains: list[Domain], datas: list, captured: list) -> Totals:
    """The global virial from ``f · r`` of owned and ghost atoms (``virial_fdotr_compute``), ghost
    forces summed into their owners (reverse communication, ``newton on``), energies summed."""
    n = len(atoms)
    forces, atom_energies = np.zeros((n, 3)), np.full(n, np.nan)
    energy, virial, pair_virial = 0.0, np.zeros((3, 3)), np.zeros((3, 3))
    for domain, data, fij in zip(domains, datas, captured):
        energy += data.energy_value
        atom_energies[domain.owner[: domain.nlocal]] = data.eatoms_value[: domain.nlocal]
        virial += domain.positions.T @ data.f  # data.f starts at zero
        np.add.at(forces, domain.owner, data.f)
        pair_virial -= domain.rij.T @ fij.get("fij", np.zeros((0, 3)))  # a domain without pairs gives none
    return Totals(energy, atom_energies, forces, virial, pair_virial, datas)


def _capture_pair_forces(data: _Data) -> dict:
    """A dict that will hold a copy of the per-pair forces the model hands LAMMPS (``"fij"``)."""
    name = "update_pair_forces_gpu" if isinstance(data, KokkosData) else "update_pair_forces"
    original, captured = getattr(data, name), {}

    def wrapper(fij):
        captured["fij"] = np.array(fij, dtype=np.float64)
        original(fij)

    setattr(data, name, wrapper)
    return captured
