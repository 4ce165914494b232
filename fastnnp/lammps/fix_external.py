"""A fastnnp potential in LAMMPS through ``fix external`` (callback mode), no ML-IAP needed.

LAMMPS input (units metal: eV, Å)::

    fix nnp all external pf/callback 1 1
    fix_modify nnp energy yes virial yes

then :func:`attach` before ``run``; :func:`create_system` makes the box and atoms of an ASE
``Atoms`` (rotated into LAMMPS's frame, one atom type per element). Every step LAMMPS calls back with the positions; the
calculator's energy, forces and virial (``-stress × volume``) go back into the fix. One MPI
process only: the callback sees only the atoms a process owns.
"""

from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from ..calculator import FastNNPCalculator

# LAMMPS's virial order xx yy zz xy xz yz, from a 3 x 3 tensor
_VIRIAL = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


class FixExternalPotential:
    """The callback of ``fix <fix_id> all external pf/callback 1 1`` evaluating ``calculator``.

    Args:
        lmp: a ``lammps.lammps`` instance (:func:`fastnnp.lammps.library.open_lammps`).
        fix_id: the fix's ID.
        calculator: a :class:`fastnnp.FastNNPCalculator` (results in eV, Å).
        elements: the chemical symbol of each LAMMPS atom type, type 1 first.
    """

    def __init__(self, lmp: Any, fix_id: str, calculator: FastNNPCalculator, elements: Sequence[str]):
        if int(lmp.extract_setting("world_size")) != 1:
            raise ValueError("fix external with fastnnp runs on one MPI process; use pair_style mliap for domains")
        units = lmp.extract_global("units")
        if units != "metal":
            raise ValueError(f"fastnnp results are in eV and Å: use 'units metal', not {units!r}")
        n_types = int(lmp.extract_global("ntypes"))
        if len(elements) != n_types:
            raise ValueError(f"give one chemical symbol per atom type: {n_types} types, {len(elements)} symbols")
        self.lmp, self.fix_id, self.calculator = lmp, fix_id, calculator
        self.atoms = Atoms(symbols=list(elements))  # validates the symbols
        self.type_numbers = np.concatenate([[0], self.atoms.numbers])
        self.calls = 0

    def __call__(self, caller: Any, ntimestep: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        atoms = self._atoms(nlocal, tag, x)
        atoms.calc = self.calculator
        energy = atoms.get_potential_energy()
        f[:] = atoms.get_forces()
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        self.lmp.fix_external_set_virial_global(self.fix_id, [float(virial[a, b]) for a, b in _VIRIAL])
        self.calls += 1

    def _atoms(self, nlocal: int, tag: np.ndarray, x: np.ndarray) -> Atoms:
        """The owned atoms, in LAMMPS's order, in the current (periodic) box."""
        natoms = int(self.lmp.get_natoms())
        if nlocal != natoms:
            raise RuntimeError(f"this process owns {nlocal} of {natoms} atoms: fix external with fastnnp needs one process")
        types = self.lmp.numpy.extract_atom("type", nelem=nlocal)
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        if not all(periodicity):
            raise ValueError("fastnnp models are open or fully periodic: use 'boundary p p p'")
        lengths = np.subtract(boxhi, boxlo)
        cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
        return Atoms(numbers=self.type_numbers[types], positions=np.array(x), cell=cell, pbc=True)


def attach(lmp: Any, fix_id: str, calculator: FastNNPCalculator, elements: Sequence[str]) -> FixExternalPotential:
    """Register a :class:`FixExternalPotential` as the callback of fix ``fix_id`` and return it."""
    potential = FixExternalPotential(lmp, fix_id, calculator, elements)
    lmp.set_fix_external_callback(fix_id, potential)
    return potential


def create_system(lmp: Any, atoms: Atoms, elements: Sequence[str]) -> None:
    """``units metal``, a periodic prism box and the atoms of ``atoms`` (fully periodic), atom type
    ``k + 1`` for ``elements[k]``, masses from ASE. LAMMPS's box has a along x and b in the xy
    plane: cell and positions are rotated into that frame (``ase.calculators.lammps.Prism``)."""
    if not atoms.pbc.all():
        raise ValueError("fastnnp's fix external needs a fully periodic cell (pbc=True)")
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(elements))
    if missing:
        raise ValueError(f"atoms of elements {' '.join(missing)} have no LAMMPS type in {list(elements)}")
    prism = Prism(atoms.cell.array)
    xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
    masses = Atoms(symbols=list(elements)).get_masses()
    lmp.commands_list([
        "units metal", "atom_style atomic", "boundary p p p",
        f"region cell prism 0 {xhi!r} 0 {yhi!r} 0 {zhi!r} {xy!r} {xz!r} {yz!r} units box",
        f"create_box {len(elements)} cell",
        *[f"mass {k + 1} {float(m)!r}" for k, m in enumerate(masses)],
    ])
    types = [list(elements).index(s) + 1 for s in symbols]
    positions = prism.vector_to_lammps(atoms.positions, wrap=True)
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.reshape(-1).tolist())
