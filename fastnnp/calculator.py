"""ASE calculator: ``atoms.calc = FastNNPCalculator("model.ckpt")``."""

import os
import time
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from torch import Tensor, nn
from tqdm.auto import tqdm

from .ensemble import Ensemble
from .loading import load_model
from .models.potential import NeuralPotential
from .neighbors.checks import singular_cells
from .neighbors.reuse import use_verlet_skin
from .step import EnergyStep, GraphedStep
from .units import energy_factor, length_factor
from .validation import finite_number

PathLike = Union[str, os.PathLike]
ModelSource = Union[PathLike, Sequence[PathLike], nn.Module]
DEFAULT_SKIN = 1.0  # Å


class FastNNPCalculator(Calculator):
    """A fastnnp potential (or an ensemble of them) as an ASE calculator.

    Results are in ASE units: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``energies``
    (eV per atom, for models whose energy is a sum of atom terms), ``stress`` (eV/Å³, Voigt
    order xx yy zz yz xz xy, the strain derivative of the energy over the volume) for fully
    periodic cells, computed from the first call that asks for it on (MD that needs only
    forces never pays for it; :meth:`calculate_batch` gives it for every periodic cell), and
    ``charges`` (elementary charges per atom, when asked for) for models that predict partial
    charges (TensorNet2: :meth:`fastnnp.models.potential.NeuralPotential.partial_charges`, which
    sum to the total charge); an ensemble adds ``energy_std`` and ``forces_std`` (and
    ``stress_std``, ``charges_std``), the spread over its members.

    Each member runs a :class:`fastnnp.step.EnergyStep`: inputs validated once per topology
    (atom count, numbers, charges, cell shape), then no host sync inside a call; on CUDA a
    Triton member's step is replayed as a CUDA graph (:class:`fastnnp.step.GraphedStep`),
    captured again when the topology changes or a search must replan.

    Args:
        model: a checkpoint path, a list of paths or a ``.zip`` of checkpoints (an ensemble),
            or a model from :func:`fastnnp.load_model`.
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device; a loaded model runs
            where it lives (another ``device`` than ``"auto"`` or that one is an error).
        dtype: torch.float32 or torch.float64; default the checkpoint's training precision.
        charge: total charge used when ``atoms.info`` has no ``"charge"`` (default 0).
        energy_unit: the model's energy unit: eV, meV, kcal/mol, kJ/mol, Hartree, or eV per unit.
        length_unit: the model's length unit: Å, nm, Bohr, or Å per unit.
        skin: Verlet skin in Å. The neighbour list is searched with cutoff + skin and reused
            until an atom has moved more than skin / 2 or the cell changed; 0 searches every call.
        load_kwargs: passed to :func:`fastnnp.load_model` (e.g. ``backend``, ``layout``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress", "charges"]

    def __init__(
        self,
        model: ModelSource,
        device: Union[str, torch.device] = "auto",
        dtype: Optional[torch.dtype] = None,
        charge: Optional[float] = None,
        energy_unit: Union[str, float] = "eV",
        length_unit: Union[str, float] = "Å",
        skin: Optional[float] = None,
        **load_kwargs,
    ):
        _check_arguments(model, device, dtype, charge, energy_unit, length_unit, skin)
        super().__init__()
        self.energy_factor = energy_factor(energy_unit)  # unknown units refused before anything loads
        self.length_factor = length_factor(length_unit)
        self.model = _potential(model, device, dtype, load_kwargs)
        self.members: list[NeuralPotential] = list(self.model) if isinstance(self.model, Ensemble) else [self.model]
        for member in self.members:
            if not isinstance(member, NeuralPotential):
                raise TypeError(f"model must be a fastnnp potential or a checkpoint path, got {type(member).__name__}")
        self.dtype = self.members[0].dtype
        self.device = self.members[0].std.device
        self.charge = 0.0 if charge is None else float(charge)
        for member in self.members:
            use_verlet_skin(member, (_default_skin(member) if skin is None else skin) / self.length_factor)
        self.first_call_seconds: Optional[float] = None
        self._stress_asked = False
        self._inputs_cache: Optional[tuple[tuple, tuple[Tensor, Tensor, Tensor]]] = None
        self._steps: dict[int, tuple[tuple, Union[EnergyStep, GraphedStep]]] = {}

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, plus ``"info"`` when ``atoms.info`` (e.g. the charge) changed."""
        changes = super().check_state(atoms, tol=tol)
        if not changes and self.atoms is not None and not _same_info(self.atoms.info, atoms.info):
            changes.append("info")
        return changes

    def calculate(
        self,
        atoms: Optional[Atoms] = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = _periodicity(atoms, properties)
        # once asked for, the stress is computed with every call (ASE's NPT asks for forces, then stress)
        self._stress_asked = self._stress_asked or "stress" in properties
        results = self._evaluate(
            [atoms.numbers], [atoms.positions], [atoms.cell.array] if periodic else None, [self._charge(atoms)],
            "energies" in properties, periodic and self._stress_asked, "charges" in properties,
        )
        self.results = {name: value[0] for name, value in results.items()}

    def calculate_batch(
        self,
        images: Sequence[Atoms],
        properties: Sequence[str] = ("energy", "forces"),
        max_atoms: int = 4096,
        progress: bool = True,
    ) -> list[dict[str, Union[float, np.ndarray]]]:
        """Evaluate many structures, ``max_atoms`` atoms per model call at most (a larger
        structure runs alone), open and periodic ones in separate calls.

        Returns one dict per structure, in order, with the keys of ``results`` (``stress``
        for periodic cells, ``energies`` and ``charges`` when asked for in ``properties``).
        """
        images = _checked_images(images, properties, max_atoms)
        want_energies = "energies" in properties
        groups = _groups(images, max_atoms, properties)
        output: list[Optional[dict]] = [None] * len(images)
        with tqdm(total=len(images), disable=not progress, unit="structure", leave=False) as bar:
            for group, periodic in groups:
                chosen = [images[k] for k in group]
                results = self._evaluate(
                    [a.numbers for a in chosen], [a.positions for a in chosen], [a.cell.array for a in chosen] if periodic else None,
                    [self._charge(a) for a in chosen], want_energies, periodic, "charges" in properties,
                )
                for slot, k in enumerate(group):
                    output[k] = {name: value[slot] for name, value in results.items()}
                bar.update(len(group))
        return output

    def _evaluate(
        self,
        numbers: list[np.ndarray],
        positions: list[np.ndarray],
        cells: Optional[list[np.ndarray]],
        charges: list[float],
        want_energies: bool,
        want_stress: bool,
        want_charges: bool = False,
    ) -> dict[str, list]:
        """Energies, forces and, where wanted, stresses, per-atom energies and charges of several systems in one
        model call; each result is a list with one entry per system, in ASE units. Per call, positions
        (and cells) go to the device and one flat tensor of results comes back."""
        start = time.perf_counter()
        z, batch, q = self._topology(numbers, charges)
        to_model = dict(dtype=self.dtype, device=self.device)
        pos = torch.as_tensor(np.concatenate(positions) / self.length_factor, **to_model)
        box = None if cells is None else torch.as_tensor(np.stack(cells) / self.length_factor, **to_model)
        properties = ("energy", "forces") + ("energies",) * want_energies + ("stress",) * want_stress
        members = [self._member_results(m, z, pos, batch, box, q, properties) for m in self.members]
        if want_charges:
            for member, results in zip(self.members, members, strict=True):
                results["charges"] = _partial_charges(member, z, pos, batch, box, q)
        host = _to_host(_combine(members))
        if self.first_call_seconds is None:
            self.first_call_seconds = time.perf_counter() - start
        return _split(host, [len(n) for n in numbers])

    def _member_results(self, member: NeuralPotential, z, pos, batch, box, q, properties: tuple[str, ...]) -> dict[str, Tensor]:
        """One member's energy [S], forces [N, 3] and, among ``properties``, stress [S, 6] and atom
        energies [N] in ASE units."""
        if "energies" in properties and not member.has_atom_energies:
            raise PropertyNotImplementedError(
                "per-atom energies need a summed scalar head without post-reduction priors (ZBL, D2, Coulomb)"
            )
        terms = self._step(member, z, pos, batch, box, q, properties).run(pos, box)
        results = {
            "energy": terms.energy[:, 0] * self.energy_factor,
            "forces": terms.forces * (self.energy_factor / self.length_factor),
        }
        if "stress" in properties:
            results["stress"] = _voigt(terms.stress) * (self.energy_factor / self.length_factor**3)
        if "energies" in properties:
            results["energies"] = terms.atom_energy * self.energy_factor
        return results

    def _step(self, member: NeuralPotential, z, pos, batch, box, q, properties: tuple[str, ...]) -> Union[EnergyStep, GraphedStep]:
        """The member's step for this topology (the tensors of :meth:`_topology`, the cell's
        shape): validated once, then sync-free; on CUDA a Triton member's step is a CUDA graph."""
        key = (id(z), id(batch), id(q), None if box is None else box.shape, properties)
        cached = self._steps.get(id(member))
        if cached is None or cached[0] != key:
            step = EnergyStep(member, z, pos, batch, box, q, properties)
            if pos.device.type == "cuda" and member._planned_searches():
                step = GraphedStep(step)
            self._steps[id(member)] = cached = (key, step)
        return cached[1]

    def _topology(self, numbers: list[np.ndarray], charges: list[float]) -> tuple[Tensor, Tensor, Tensor]:
        """Atomic numbers [N], system index [N] and total charges [S] on the model's device,
        copied there only when they change."""
        key = (tuple(n.tobytes() for n in numbers), tuple(charges))
        if self._inputs_cache is None or self._inputs_cache[0] != key:
            sizes = torch.tensor([len(n) for n in numbers])
            z = torch.as_tensor(np.concatenate(numbers), dtype=torch.long)
            batch = torch.repeat_interleave(torch.arange(len(numbers)), sizes)
            q = torch.tensor(charges, dtype=self.dtype)
            self._inputs_cache = (key, tuple(t.to(self.device) for t in (z, batch, q)))
        return self._inputs_cache[1]

    def _charge(self, atoms: Atoms) -> float:
        return finite_number(atoms.info.get("charge", self.charge), "atoms.info['charge']")


DTYPES = (torch.float32, torch.float64)
BATCH_PROPERTIES = frozenset(FastNNPCalculator.implemented_properties)


def _check_arguments(model, device, dtype, charge, energy_unit, length_unit, skin) -> None:
    """The constructor's arguments, each named in its error, before anything is loaded."""
    paths = model if isinstance(model, (list, tuple)) else [model]
    if not isinstance(model, nn.Module) and (not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths)):
        raise TypeError(f"model must be a checkpoint path, a list of paths, a .zip or a model from fastnnp.load_model, "
                        f"got {model!r:.80}")
    if device != "auto":
        _check_device(device)
    if dtype is not None and dtype not in DTYPES:
        raise TypeError(f"dtype must be torch.float32, torch.float64 or None (the checkpoint's), got {dtype!r}")
    for name, value, rule, low in (("charge", charge, "a finite number of elementary charges", -np.inf),
                                   ("skin", skin, "a finite number of Å >= 0", 0.0)):
        if value is not None and not _is_real(value):
            raise TypeError(f"{name} must be {rule} or None, got {type(value).__name__} {value!r:.40}")
        if value is not None and not (np.isfinite(value) and value >= low):
            raise ValueError(f"{name} must be {rule} or None, got {value!r}")
    for name, unit in (("energy_unit", energy_unit), ("length_unit", length_unit)):
        if not isinstance(unit, str) and not _is_real(unit):
            raise TypeError(f"{name} must be a unit name or a positive number, got {unit!r}")


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_device(device) -> torch.device:
    """``device`` as a torch device that exists here, else an error naming it."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device, got "
                        f"{type(device).__name__} {device!r:.40}")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch sees no CUDA device (torch.cuda.is_available() is False); "
                             "use device='cpu' or 'auto'")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type != "cpu":
        raise ValueError(f"device={device!r}: fastnnp runs on 'cpu' or 'cuda'")
    return chosen


def _checked_images(images, properties: Sequence[str], max_atoms) -> list[Atoms]:
    """calculate_batch's arguments checked: Atoms only, known properties, a positive max_atoms."""
    if isinstance(images, Atoms):
        raise TypeError("images must be a sequence of ase.Atoms; for one structure use atoms.calc = calculator")
    images = list(images)
    for k, atoms in enumerate(images):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"images[{k}] is a {type(atoms).__name__}, not an ase.Atoms")
    if isinstance(properties, str) or set(properties) - BATCH_PROPERTIES:
        raise ValueError(f"properties must be a collection of {sorted(BATCH_PROPERTIES)}, got {properties!r}")
    if not isinstance(max_atoms, (int, np.integer)) or isinstance(max_atoms, bool) or max_atoms < 1:
        raise ValueError(f"max_atoms must be a positive int, got {max_atoms!r}")
    return images


def _same_info(old: dict, new: dict) -> bool:
    """Whether two ``atoms.info`` dicts hold equal values (arrays compared element-wise)."""
    if old.keys() != new.keys():
        return False
    for key, value in old.items():
        other = new[key]
        if isinstance(value, np.ndarray) or isinstance(other, np.ndarray):
            if not np.array_equal(value, other):
                return False
        else:
            try:
                if not bool(value == other):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def _potential(model: ModelSource, device, dtype, load_kwargs: dict) -> nn.Module:
    if isinstance(model, nn.Module):
        if dtype is not None or load_kwargs:
            raise ValueError("dtype and loading options apply to checkpoint paths, not to an already loaded model")
        where = next(iter(model.buffers()), next(iter(model.parameters()), None))
        chosen = None if device == "auto" else _check_device(device)
        if chosen is not None and where is not None and (
            chosen.type != where.device.type or chosen.index not in (None, where.device.index)
        ):
            raise ValueError(f"device={device!r} but the loaded model lives on {where.device}: move it with "
                             f"model.to({str(device)!r}) or pass device='auto'")
        return model
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(model, derivative=False, device=device, dtype=dtype, **load_kwargs)
    return loaded.requires_grad_(False)


def _default_skin(member: NeuralPotential) -> float:
    """Verlet skin in Å: 0 for a Triton representation (its kernels see every listed pair),
    else 1 Å (the torch path re-filters the pairs on the exact cutoff)."""
    triton = any(hasattr(module, "table_search") for module in member.modules())
    return 0.0 if triton else DEFAULT_SKIN


def _periodicity(atoms: Atoms, properties: Sequence[str] = ()) -> bool:
    """True for a fully periodic cell, False for open boundaries; refuses what models cannot
    do (a singular cell by the models' own rule, :func:`singular_cells`), and ``stress``
    among ``properties`` of an open system."""
    if len(atoms) == 0:
        raise ValueError("the Atoms object is empty: there is nothing to compute")
    pbc = atoms.pbc
    if not pbc.any():
        if "stress" in properties:
            raise PropertyNotImplementedError("stress needs a periodic cell (pbc=True on all three axes)")
        return False
    if not pbc.all():
        raise ValueError(
            f"mixed periodicity pbc={pbc.tolist()} is not supported: TorchMD-Net models are either open or periodic "
            "along all three cell vectors. For a slab, set pbc=True with more vacuum than the cutoff along the "
            "open direction."
        )
    if bool(singular_cells(torch.as_tensor(atoms.cell.array, dtype=torch.float64).reshape(1, 3, 3))[0]):
        raise ValueError(f"pbc=True needs a cell of non-zero volume, got cell {atoms.cell.array.tolist()}")
    return True


def _groups(images: Sequence[Atoms], max_atoms: int, properties: Sequence[str]) -> list[tuple[list[int], bool]]:
    """Consecutive structures of the same periodicity, at most ``max_atoms`` atoms per group,
    each with its periodicity; every structure is checked (:func:`_periodicity`) first."""
    kinds = [_periodicity(atoms, properties) for atoms in images]
    groups: list[tuple[list[int], bool]] = []
    size = 0
    for k, (atoms, periodic) in enumerate(zip(images, kinds, strict=True)):
        if groups and periodic == groups[-1][1] and size + len(atoms) <= max_atoms:
            groups[-1][0].append(k)
            size += len(atoms)
        else:
            groups.append(([k], periodic))
            size = len(atoms)
    return groups


def _partial_charges(member: NeuralPotential, z, pos, batch, box, q) -> Tensor:
    """The member's predicted partial charges [N] (elementary charges); refused for models
    that predict none."""
    charges = member.partial_charges(z, pos, batch, box, q)
    if charges is None:
        raise PropertyNotImplementedError(
            f"charges need a model that predicts partial charges (TensorNet2); this one is "
            f"{type(member.representation_model).__name__}"
        )
    return charges


def _voigt(tensor: Tensor) -> Tensor:
    """[S, 3, 3] -> [S, 6] in ASE's Voigt order xx yy zz yz xz xy."""
    rows, cols = [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]
    return tensor[:, rows, cols]


def _combine(members: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Mean over ensemble members, and the sample spread as ``<name>_std`` when there are several."""
    combined = {}
    for name in members[0]:
        stacked = torch.stack([m[name] for m in members])
        combined[name] = stacked.mean(0)
        if len(members) > 1 and name != "energies":
            combined[f"{name}_std"] = stacked.std(0)
    return combined


def _to_host(results: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """All result tensors in one device-to-host copy."""
    flat = torch.cat([value.detach().reshape(-1) for value in results.values()]).cpu().numpy()
    host, offset = {}, 0
    for name, value in results.items():
        host[name] = flat[offset:offset + value.numel()].reshape(value.shape)
        offset += value.numel()
    return host


def _split(host: dict[str, np.ndarray], sizes: list[int]) -> dict[str, list]:
    """Per-system lists of results (floats for energies, arrays otherwise)."""
    bounds = np.cumsum([0, *sizes])
    results: dict[str, list] = {}
    for name, value in host.items():
        if name.startswith(("forces", "energies", "charges")):
            results[name] = [value[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        elif name.startswith("stress"):
            results[name] = list(value)
        else:
            results[name] = [float(v) for v in value]
    results["free_energy"] = list(results["energy"])
    return results
