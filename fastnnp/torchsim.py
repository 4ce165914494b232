"""fastnnp as a torch-sim model: ``FastNNPModel("model.ckpt")`` (``torch_sim.models.interface.ModelInterface``).

Imported on use only: ``import fastnnp`` does not import torch-sim.
"""

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
import torch_sim as ts
from torch import Tensor
from torch_sim.models.interface import ModelInterface

from .calculator import ModelSource, _default_skin, _potential
from .ensemble import Ensemble
from .models.potential import NeuralPotential
from .neighbors.reuse import use_verlet_skin
from .step import EnergyStep
from .units import energy_factor, length_factor


class FastNNPModel(ModelInterface):
    """A fastnnp potential (or an ensemble: the member mean, and ``energy_std``, ``forces_std``)
    as a torch-sim model, in torch-sim's metal units: ``energy`` [S] (eV), ``forces`` [N, 3]
    (eV/Å), ``stress`` [S, 3, 3] (eV/Å³, the strain derivative of the energy over the volume, as
    ASE's, for periodic states when ``compute_stress``; an open state has none).

    Every system of a state runs in one model call. The state's cell is torch-sim's column
    vectors (``state.cell[s]`` has a, b, c as columns, the transpose of ASE's cell); a state
    without ``pbc`` is open. Total charges per system: the state's ``charge`` [S] where it has
    one (torch-sim's per-system extras), else ``charge``. Per topology (atomic numbers, system
    index, charges, cell shape) the inputs are validated once; later calls of the same topology
    run :class:`fastnnp.step.EnergyStep` without re-checking.

    Args:
        model: a checkpoint path, a list of paths or a ``.zip`` (an ensemble), or a model from
            :func:`fastnnp.load_model`.
        device: where the model runs (default CUDA when available); not for a loaded model.
        dtype: float32 or float64; default the checkpoint's precision. States must be in it.
        charge: total charge (e) of each system of a state without ``charge``.
        compute_stress: return the stress of periodic states.
        energy_unit, length_unit: the model's units, as for :class:`fastnnp.FastNNPCalculator`.
        skin: Verlet skin (Å); default 1 Å on the torch path, 0 on Triton.
        load_kwargs: passed to :func:`fastnnp.load_model` (``backend``, ``radial``, ...).
    """

    def __init__(
        self,
        model: ModelSource,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
        charge: float = 0.0,
        compute_stress: bool = True,
        energy_unit: Union[str, float] = "eV",
        length_unit: Union[str, float] = "Å",
        skin: Optional[float] = None,
        **load_kwargs: Any,
    ):
        super().__init__()
        if isinstance(model, torch.nn.Module) and device is not None:
            raise ValueError("device applies to checkpoint paths; a loaded model runs where it lives")
        self.model = _potential(model, "auto" if device is None else device, dtype, load_kwargs)
        self.members: list[NeuralPotential] = list(self.model) if isinstance(self.model, Ensemble) else [self.model]
        for member in self.members:
            if not isinstance(member, NeuralPotential):
                raise TypeError(f"model must be a fastnnp potential or a checkpoint path, got {type(member).__name__}")
            use_verlet_skin(member, (_default_skin(member) if skin is None else skin) / length_factor(length_unit))
        self._device = self.members[0].std.device
        self._dtype = self.members[0].dtype
        self._compute_forces = True
        self._compute_stress = bool(compute_stress)
        # per-edge work runs in atom chunks (memory O(N F)); an open state's cell has no volume
        self._memory_scales_with = "n_atoms"
        self.charge = float(charge)
        self.energy_factor = energy_factor(energy_unit)
        self.length_factor = length_factor(length_unit)
        self._steps: dict[int, tuple[tuple, EnergyStep]] = {}

    @property
    def compute_stress(self) -> bool:
        return self._compute_stress

    @compute_stress.setter
    def compute_stress(self, compute_stress: bool) -> None:
        self._compute_stress = bool(compute_stress)

    def forward(self, state: Union[ts.SimState, Mapping[str, Tensor]], **kwargs: Any) -> dict[str, Tensor]:
        """Energy [S], forces [N, 3] and, for a periodic state with ``compute_stress``, stress
        [S, 3, 3] of every system of ``state`` (a ``SimState`` or a dict of its fields)."""
        if kwargs:
            raise TypeError(f"FastNNPModel.forward takes a state only, got {', '.join(sorted(kwargs))}")
        get = state.get if isinstance(state, Mapping) else lambda name: getattr(state, name, None)
        pos = get("positions")
        cell = get("cell")
        z = get("atomic_numbers")
        system_idx = get("system_idx")
        if system_idx is None:
            system_idx = torch.zeros_like(z)
        periodic = _periodic(get("pbc"))
        box = cell.mT / self.length_factor if periodic else None
        q = get("charge")
        properties = ("energy", "forces") + (("stress",) if periodic and self._compute_stress else ())
        scale = self.energy_factor
        outputs = []
        for member in self.members:
            step = self._step(member, z, pos / self.length_factor, system_idx, box, q, cell.shape[0], properties)
            terms = step.run(pos / self.length_factor, box)
            out = {"energy": terms.energy[:, 0] * scale, "forces": terms.forces * (scale / self.length_factor)}
            if "stress" in properties:
                out["stress"] = terms.stress * (scale / self.length_factor**3)
            outputs.append(out)
        return _combine(outputs)

    def _step(self, member, z, pos, system_idx, box, q, n_systems: int, properties) -> EnergyStep:
        """The member's step for this topology, made (and its inputs validated) when the atomic
        numbers, system index or charges are other tensors than last time, or were changed in
        place, or the cell shape or properties changed."""
        key = (_identity(z), _identity(system_idx), _identity(q), None if box is None else box.shape, properties)
        cached = self._steps.get(id(member))
        if cached is None or cached[0] != key:
            charges = q if q is not None else torch.full((n_systems,), self.charge, dtype=self._dtype, device=pos.device)
            cached = (key, EnergyStep(member, z, pos, system_idx, box, charges.to(self._dtype), properties), (z, system_idx, q))
            self._steps[id(member)] = cached
        return cached[1]


def _identity(tensor: Optional[Tensor]) -> Optional[tuple]:
    """Which tensor this is and its in-place version (the step cache keeps the tensor alive, so
    its storage cannot be reused by another one while cached)."""
    return None if tensor is None else (id(tensor), tensor.data_ptr(), tensor.shape, tensor._version)


def _periodic(pbc) -> bool:
    """torch-sim's ``pbc`` (a bool, or per axis): True when periodic along all three axes."""
    flags = torch.as_tensor(pbc, dtype=torch.bool).reshape(-1)
    if bool(flags.all()):
        return True
    if bool(flags.any()):
        raise ValueError(
            f"mixed periodicity pbc={flags.tolist()} is not supported: TorchMD-Net models are open or "
            "periodic along all three cell vectors"
        )
    return False


def _combine(outputs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Detached results; the mean over ensemble members and ``<name>_std`` when there are several."""
    if len(outputs) == 1:
        return {name: value.detach() for name, value in outputs[0].items()}
    combined = {}
    for name in outputs[0]:
        stacked = torch.stack([out[name] for out in outputs]).detach()
        combined[name] = stacked.mean(0)
        combined[f"{name}_std"] = stacked.std(0)
    return combined
