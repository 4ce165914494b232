"""The computation behind fastnnp's ``openmm.PythonForce``: OpenMM positions (nm) in, energy
(kJ/mol) and forces (kJ/mol/nm) out, one :class:`fastnnp.step.EnergyStep` per ensemble member.

Per step: one host->device copy (positions and the box in one array), the step's status read,
one device->host copy (energy and forces in one array). On CUDA a Triton member's step is a
:class:`fastnnp.step.GraphedStep` (a CUDA graph replay).
"""

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ase import units
from openmm import unit

from ..calculator import _default_skin, _potential
from ..ensemble import Ensemble
from ..models.potential import NeuralPotential
from ..neighbors.reuse import use_verlet_skin
from ..step import EnergyStep, GraphedStep
from ..units import energy_factor, length_factor

KJ_PER_MOL_PER_EV = units.mol / units.kJ
ANGSTROM_PER_NM = 10.0


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`load_members` loads: ``source`` a checkpoint path, a list of them or a ``.zip``
    (an ensemble); the model's units (:mod:`fastnnp.units`); ``skin`` the Verlet skin in nm (None:
    the calculator's default, 0.1 nm on the torch path and 0 on Triton); ``device``, ``dtype`` and
    ``load_kwargs`` as for :func:`fastnnp.load_model`."""

    source: Union[str, tuple[str, ...]]
    energy_unit: Union[str, float] = "eV"
    length_unit: Union[str, float] = "Å"
    skin: Optional[float] = None
    device: str = "auto"
    dtype: Optional[torch.dtype] = None
    load_kwargs: dict = field(default_factory=dict)

    @property
    def nm_to_model(self) -> float:
        """Model length units per nm."""
        return ANGSTROM_PER_NM / length_factor(self.length_unit)

    @property
    def energy_to_kj_per_mol(self) -> float:
        """kJ/mol per model energy unit."""
        return energy_factor(self.energy_unit) * KJ_PER_MOL_PER_EV


def load_members(spec: ModelSpec) -> list[NeuralPotential]:
    """The spec's model (each member of an ensemble), parameters frozen, Verlet skin set."""
    source = list(spec.source) if isinstance(spec.source, tuple) else spec.source
    model = _potential(source, spec.device, spec.dtype, dict(spec.load_kwargs))
    members = list(model) if isinstance(model, Ensemble) else [model]
    for member in members:
        if not isinstance(member, NeuralPotential):
            raise TypeError(f"modelPath must name fastnnp checkpoints, got a {type(member).__name__}")
        skin = _default_skin(member) / ANGSTROM_PER_NM if spec.skin is None else spec.skin
        use_verlet_skin(member, skin * spec.nm_to_model)
    return members


class FastNNPForce:
    """``compute(state) -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)`` of the atoms ``numbers``
    (atomic numbers, in the order of the force's particles) with total ``charge`` (e), periodic
    when ``periodic`` (the state's box vectors are the cell). ``members`` are the loaded models
    (default: loaded from ``spec``); pickling keeps the spec, not the weights, so an
    ``XmlSerializer`` copy of the System loads the checkpoint again."""

    def __init__(
        self,
        spec: ModelSpec,
        numbers: Sequence[int],
        charge: float,
        periodic: bool,
        members: Optional[list[NeuralPotential]] = None,
    ):
        self.spec = spec
        self.numbers = tuple(int(n) for n in numbers)
        self.charge = float(charge)
        self.periodic = bool(periodic)
        self.members = load_members(spec) if members is None else copy.deepcopy(members)
        first = self.members[0]
        self.device, self.dtype = first.std.device, first.dtype
        self.z = torch.tensor(self.numbers, dtype=torch.long, device=self.device)
        self.batch = torch.zeros_like(self.z)
        self.q = torch.tensor([self.charge], dtype=self.dtype, device=self.device)
        self.nm_to_model = spec.nm_to_model
        self.energy_scale = spec.energy_to_kj_per_mol
        self.force_scale = self.energy_scale * self.nm_to_model
        self.steps: Optional[list[Union[EnergyStep, GraphedStep]]] = None

    def __reduce__(self):
        return FastNNPForce, (self.spec, self.numbers, self.charge, self.periodic)

    def __call__(self, state) -> tuple[float, np.ndarray]:
        host = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self.periodic:
            host = np.concatenate([host, state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)])
        inputs = torch.from_numpy(np.ascontiguousarray(host)).to(self.device, self.dtype) * self.nm_to_model
        n = len(self.numbers)
        pos, box = inputs[:n], (inputs[n:].reshape(1, 3, 3) if self.periodic else None)
        flat = self.evaluate(pos, box).cpu().numpy()
        return float(flat[0]) * self.energy_scale, np.multiply(flat[1:].reshape(n, 3), self.force_scale, dtype=np.float64)

    def evaluate(self, pos: torch.Tensor, box: Optional[torch.Tensor]) -> torch.Tensor:
        """Energy and forces in model units as one flat device tensor ``[1 + 3 N]`` (the mean over
        ensemble members); ``pos`` [N, 3] and ``box`` [1, 3, 3] (or None) in model units."""
        if self.steps is None:
            self.steps = [self._step(member, pos, box) for member in self.members]
        results = [step.run(pos, box) for step in self.steps]
        flat = [torch.cat([r.energy.reshape(1), r.forces.reshape(-1)]) for r in results]
        return flat[0] if len(flat) == 1 else torch.stack(flat).mean(0)

    def _step(self, member: NeuralPotential, pos: torch.Tensor, box: Optional[torch.Tensor]):
        step = EnergyStep(member, self.z, pos, self.batch, box, self.q)
        if pos.device.type == "cuda" and member._planned_searches():
            step = GraphedStep(step)
        return step
