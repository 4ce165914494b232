"""openmm-ml's ``MLPotentialImpl`` for fastnnp: the model as one ``openmm.PythonForce``."""

import math
import os
from typing import Any, Iterable, Optional, Sequence, Union

import openmm
import openmm.app
import torch
from openmm import unit
from openmmml.mlpotential import MLPotentialImpl

from ..validation import finite_number
from .compute import FastNNPForce, ModelSpec, load_members

PathLike = Union[str, os.PathLike]
# options openmm-ml's mechanical embedding reads from createMixedSystem's arguments, which it
# also passes on to addForces; they are the embedding's, not the potential's
EMBEDDING_OPTIONS = frozenset({"mlLongRange", "linkAtomDistances"})


class FastNNPPotentialImpl(MLPotentialImpl):
    """A fastnnp model (or an ensemble: the member mean) in OpenMM.

    ``MLPotential("fastnnp", modelPath=..., energy_unit="eV", length_unit="Å", skin=None,
    device="auto", dtype=None, **load_kwargs)``:

    - ``modelPath``: a TorchMD-Net checkpoint, a list of them or a ``.zip`` (an ensemble).
    - ``energy_unit``, ``length_unit``: the model's units, as for
      :class:`fastnnp.FastNNPCalculator` (default eV and Å); OpenMM's nm and kJ/mol are
      converted to and from them.
    - ``skin``: Verlet skin in nm (a number or an OpenMM length); default 0.1 nm on the torch
      path, 0 on the Triton backend.
    - ``device`` (``"auto"``: CUDA when available), ``dtype`` and ``load_kwargs`` (``backend``,
      ``radial``, ``layout``, ...) go to :func:`fastnnp.load_model`; on CUDA in float32 the
      default backend is Triton, replayed as a CUDA graph.

    ``createSystem(topology, charge=0)`` and ``createMixedSystem(topology, system, atoms,
    charge=0)``: periodic when the topology has box vectors; ``charge`` is the total charge
    (e) of the atoms the model computes.
    """

    def __init__(
        self,
        name: str,
        modelPath: Union[PathLike, Sequence[PathLike], None] = None,
        energy_unit: Union[str, float] = "eV",
        length_unit: Union[str, float] = "Å",
        skin: Union[float, unit.Quantity, None] = None,
        device: Union[str, torch.device] = "auto",
        dtype: Optional[torch.dtype] = None,
        **load_kwargs: Any,
    ):
        if modelPath is None:
            raise ValueError(
                "MLPotential('fastnnp') needs modelPath=: a checkpoint, a list of checkpoints or a .zip of them"
            )
        if isinstance(modelPath, (str, os.PathLike)):
            source: Union[str, tuple[str, ...]] = os.fspath(modelPath)
        elif isinstance(modelPath, (list, tuple)):
            source = tuple(os.fspath(p) for p in modelPath)
        else:
            raise TypeError(f"modelPath must be a path or a list of paths, got {type(modelPath).__name__}")
        self.name = name
        self.spec = ModelSpec(
            source, energy_unit, length_unit, _skin_nm(skin), str(device), dtype, dict(load_kwargs)
        )
        self.members = load_members(self.spec)

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Optional[Iterable[int]],
        forceGroup: int,
        charge: float = 0.0,
        **args: Any,
    ) -> None:
        unknown = sorted(set(args) - EMBEDDING_OPTIONS)
        if unknown:
            raise ValueError(f"the fastnnp potential does not take {', '.join(unknown)}; it takes charge=")
        charge = finite_number(charge, "charge", "a number (the total charge in e)")
        periodic = topology.getPeriodicBoxVectors() is not None
        if system.usesPeriodicBoundaryConditions() and not periodic:
            raise ValueError("the System is periodic but the Topology has no box vectors: set them on the Topology")
        included = list(topology.atoms())
        if atoms is not None:
            atoms = [int(i) for i in atoms]
            included = [included[i] for i in atoms]
        if not included:
            raise ValueError("no atoms for the fastnnp potential: the atom list is empty")
        numbers = [_atomic_number(atom, self.members[0].max_z) for atom in included]
        force = openmm.PythonForce(FastNNPForce(self.spec, numbers, charge, periodic, self.members))
        force.setName("FastNNPForce")
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(atoms)
        system.addForce(force)

    def getMLLongRange(self) -> Optional[bool]:
        """False when every member's energy is a sum of local atom terms (no Coulomb, ZBL or D2
        term after the reduction); otherwise unknown (None): pass ``mlLongRange`` to
        ``createMixedSystem`` of a periodic system."""
        return False if all(member.has_atom_energies for member in self.members) else None


def _skin_nm(skin: Union[float, unit.Quantity, None]) -> Optional[float]:
    if skin is None:
        return None
    value = skin.value_in_unit(unit.nanometer) if unit.is_quantity(skin) else float(skin)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"skin must be a finite length >= 0 (nm), got {skin}")
    return value


def _atomic_number(atom: openmm.app.topology.Atom, max_z: int) -> int:
    """The atom's atomic number; ValueError naming the atom when it has no element or the model
    has no embedding for it."""
    where = f"atom {atom.index} ({atom.name} of residue {atom.residue.name} {atom.residue.id})"
    if atom.element is None:
        raise ValueError(f"{where} has no element: the fastnnp potential needs every atom's element")
    z = atom.element.atomic_number
    if not 1 <= z < max_z:
        raise ValueError(f"{where} has atomic number {z}; the model covers 1..{max_z - 1}")
    return z


__all__ = ["FastNNPPotentialImpl"]
