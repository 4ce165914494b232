"""Training data: frames read from disk, train/val/test splits, and batches for the model.

Data sets (config key ``dataset``), read in TorchMD-Net's frame order so that its splits apply:

- ``Custom``: TorchMD-Net's NumPy layout. ``coord_files`` [frames, atoms, 3], ``embed_files``
  [atoms] atomic numbers, ``energy_files`` [frames, 1] or [frames], ``force_files``
  [frames, atoms, 3]; each a glob, files paired in sorted order. fastnnp-only extras in
  ``dataset_arg`` (torchmd-train ignores ``dataset_arg`` for Custom): ``box_files`` [frames, 3, 3]
  cells (rows are lattice vectors) and ``stress_files`` [frames, 6] (Voigt xx yy zz yz xz xy)
  or [frames, 3, 3].
- ``HDF5``: TorchMD-Net's layout. ``dataset_root`` is a file or a ``;``-separated list; every
  group except ``_metadata`` holds ``pos`` [frames, atoms, 3], ``types`` [frames, atoms] or
  [atoms], and ``energy`` [frames, 1] or [frames] and/or ``forces`` [frames, atoms, 3].
- ``ASE`` (fastnnp-only): any file ``ase.io.read`` reads, e.g. extended XYZ; ``dataset_root`` is
  the file or a ``;``-separated list. Energy, forces and stress come from the stored calculator
  results or from ``info``/``arrays``; total charge from ``info["charge"]``; the cell when
  ``pbc`` is all True (partly periodic frames are refused). ``dataset_arg`` may set ``index``
  (``ase.io.read`` index, default ``":"``), ``format``, and ``energy_key``, ``forces_key``,
  ``stress_key``, ``charge_key``.

Units are the data set's (TorchMD-Net converts nothing): lengths Å, energy E, forces E/Å,
stress E/Å³ with ASE's sign. ``box_vecs``, when set, is the cell of every frame that has none,
as TorchMD-Net's models use it as their default box.

Energy references: TorchMD-Net subtracts nothing from Custom or HDF5 energies. Its
``remove_ref_energy`` (and the ``Atomref`` prior) need a data set with ``get_atomref``, which
Custom and HDF5 lack (torchmd-train stops with an AttributeError); fastnnp raises a ValueError
instead. Store energies with the references already removed, as the Custom files usually are.
"""

from __future__ import annotations

import glob
import os
import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress
from torch import Tensor

from .config import TORCHMD_TRAIN_DEFAULTS

DATASETS = ("Custom", "HDF5", "ASE")


class Frame(NamedTuple):
    """One labelled structure, in the data set's units."""

    z: np.ndarray  # [n] int64 atomic numbers
    pos: np.ndarray  # [n, 3] float64, Å
    energy: float | None  # total energy
    forces: np.ndarray | None  # [n, 3] float64
    cell: np.ndarray | None  # [3, 3] float64, rows are lattice vectors; None: open boundaries
    stress: np.ndarray | None  # [3, 3] float64, energy/Å^3, ASE sign convention
    charge: float  # total charge, 0 when the data set has none
    source: str  # "path:frame" for messages


class Batch(NamedTuple):
    """Frames concatenated for one model call; S systems, N atoms in all."""

    z: Tensor  # [N] int64
    pos: Tensor  # [N, 3]
    batch: Tensor  # [N] int64 system index
    box: Tensor | None  # [S, 3, 3] when every frame is periodic, else None
    q: Tensor  # [S] total charges
    energy: Tensor | None  # [S, 1]
    forces: Tensor | None  # [N, 3]
    stress: Tensor | None  # [S, 3, 3]


def load_frames(config: dict) -> list[Frame]:
    """Read and check the frames of the data set that ``config`` (from ``load_config``) names.

    Raises ValueError, naming file and frame, for unreadable shapes, non-finite values, atom
    count mismatches, and energies (forces) missing while ``y_weight`` > 0 (``derivative`` and
    ``neg_dy_weight`` > 0).
    """
    config = {**TORCHMD_TRAIN_DEFAULTS, **config}
    name = config["dataset"]
    if name not in _READERS:
        raise ValueError(f"dataset {name!r} is not supported: fastnnp reads {', '.join(DATASETS)}")
    if config["remove_ref_energy"]:
        raise ValueError(
            f"remove_ref_energy needs reference energies from the data set, and {name} has none "
            "(torchmd-train fails on it too); store energies with the references removed instead"
        )
    frames = _READERS[name](config)
    if not frames:
        raise ValueError(f"the {name} data set holds no frames")
    if config["box_vecs"] is not None:
        box = np.asarray(config["box_vecs"], dtype=np.float64)
        frames = [f._replace(cell=box) if f.cell is None else f for f in frames]
    need_energy = config["y_weight"] > 0
    need_forces = bool(config["derivative"]) and config["neg_dy_weight"] > 0
    for frame in frames:
        _check_frame(frame, need_energy, need_forces)
    return frames


def make_splits(
    n: int,
    train_size: int | float | None,
    val_size: int | float | None,
    test_size: int | float | None,
    seed: int,
    splits: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices into ``n`` frames, as torchmd-train draws them.

    A float size is a fraction of ``n`` (rounded), an int a count, None the rest (at most one).
    The frames are permuted with ``np.random.default_rng(seed)``; the same seed gives
    torchmd-train's indices. ``splits``: an .npz with ``idx_train``, ``idx_val``, ``idx_test``
    that replaces the drawing.
    """
    if splits is not None:
        with np.load(splits) as f:
            idx = tuple(np.asarray(f[k], dtype=np.int64) for k in ("idx_train", "idx_val", "idx_test"))
        for k, part in zip(("idx_train", "idx_val", "idx_test"), idx, strict=True):
            if part.size and (part.min() < 0 or part.max() >= n):
                raise ValueError(f"{splits}: {k} has indices outside the {n} frames of the data set")
        return idx
    sizes = [train_size, val_size, test_size]
    if sum(s is None for s in sizes) > 1:
        raise ValueError("only one of train_size, val_size, test_size may be None")
    is_float = [isinstance(s, float) for s in sizes]
    sizes = [round(n * s) if f else s for s, f in zip(sizes, is_float, strict=True)]
    if None in sizes:
        rest = sizes.index(None)
        sizes[rest] = n - sum(s for s in sizes if s is not None)
    if sum(sizes) > n:
        for k in (2, 1, 0):
            if is_float[k]:
                sizes[k] -= 1
                break
    if min(sizes) < 0:
        raise ValueError(f"one of the train ({sizes[0]}), val ({sizes[1]}), test ({sizes[2]}) splits is negative")
    total = sum(sizes)
    if total > n:
        raise ValueError(f"the data set ({n} frames) is smaller than the combined split sizes ({total})")
    if total < n:
        warnings.warn(f"{n - total} samples were excluded from the dataset", stacklevel=2)
    perm = np.random.default_rng(seed).permutation(np.arange(n, dtype=int))
    a, b = sizes[0], sizes[0] + sizes[1]
    return perm[:a].astype(np.int64), perm[a:b].astype(np.int64), perm[b:total].astype(np.int64)


def collate(frames: Sequence[Frame], dtype: torch.dtype, device: torch.device | str = "cpu") -> Batch:
    """Concatenate frames into one batch; floating tensors in ``dtype``.

    A batch mixing open and periodic frames, or frames with and without a label, is a ValueError.
    """
    if not frames:
        raise ValueError("cannot collate an empty list of frames")
    counts = torch.tensor([len(f.z) for f in frames])

    def floats(arrays) -> Tensor:
        return torch.as_tensor(np.asarray(arrays), dtype=dtype, device=device)

    def cat_or_none(name: str, stack: bool) -> Tensor | None:
        values = [getattr(f, name) for f in frames]
        missing = [v is None for v in values]
        if all(missing):
            return None
        if any(missing):
            have, lack = frames[missing.index(False)], frames[missing.index(True)]
            raise ValueError(f"cannot batch frames with and without {name}: {have.source} has it, {lack.source} not")
        return floats(np.stack(values) if stack else np.concatenate(values))

    box = cat_or_none("cell", stack=True)
    energy = cat_or_none("energy", stack=True)
    return Batch(
        z=torch.as_tensor(np.concatenate([f.z for f in frames]), dtype=torch.int64, device=device),
        pos=floats(np.concatenate([f.pos for f in frames])),
        batch=torch.repeat_interleave(torch.arange(len(frames)), counts).to(device),
        box=box,
        q=floats([f.charge for f in frames]),
        energy=None if energy is None else energy.reshape(-1, 1),
        forces=cat_or_none("forces", stack=False),
        stress=cat_or_none("stress", stack=True),
    )


def _check_frame(frame: Frame, need_energy: bool, need_forces: bool) -> None:
    def fail(problem: str):
        raise ValueError(f"{frame.source}: {problem}")

    n = frame.z.shape[0] if frame.z.ndim == 1 else -1
    if n <= 0:
        fail(f"atomic numbers must have shape [n_atoms] with n_atoms > 0, got {frame.z.shape}")
    if frame.z.min() < 1:
        fail(f"atomic numbers must be positive, got {int(frame.z.min())}")
    for name, value, shape in (("positions", frame.pos, (n, 3)), ("forces", frame.forces, (n, 3)),
                               ("cell", frame.cell, (3, 3)), ("stress", frame.stress, (3, 3))):
        if value is None:
            continue
        if value.shape != shape:
            fail(f"{name} have shape {value.shape}, expected {shape} for {n} atoms")
        if not np.isfinite(value).all():
            fail(f"{name} contain NaN or inf")
    for name, value in (("energy", frame.energy), ("charge", frame.charge)):
        if value is not None and not np.isfinite(value):
            fail(f"{name} is {value}")
    if frame.cell is not None and abs(np.linalg.det(frame.cell)) < 1e-6:
        fail("cell has zero volume")
    if frame.stress is not None and frame.cell is None:
        fail("stress given for a frame without a cell")
    if need_energy and frame.energy is None:
        fail("no energy, but y_weight > 0")
    if need_forces and frame.forces is None:
        fail("no forces, but derivative is true and neg_dy_weight > 0")


def _check_finite(array: np.ndarray, path: str, name: str) -> None:
    """Name the first frame (axis 0) of ``array`` holding NaN or inf."""
    bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}:{int(np.argmax(bad))}: {name} contain NaN or inf")


def _per_frame(array: np.ndarray, n_frames: int, tail: tuple[int, ...], path: str, name: str) -> np.ndarray:
    """``array`` as float64 [n_frames, *tail]; [n_frames] is accepted for a [n_frames, 1] tail."""
    if tail == (1,) and array.shape == (n_frames,):
        array = array[:, None]
    if array.shape != (n_frames, *tail):
        raise ValueError(f"{path}: {name} have shape {array.shape}, expected {(n_frames, *tail)}")
    array = array.astype(np.float64)
    _check_finite(array, path, name)
    return array


def _stresses(array: np.ndarray, n_frames: int, path: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1:] == (6,):
        array = voigt_6_to_full_3x3_stress(array)
    return _per_frame(array, n_frames, (3, 3), path, "stresses")


def _glob(pattern: str | None, key: str) -> list[str]:
    if not pattern:
        raise ValueError(f"dataset Custom needs {key}")
    files = sorted(glob.glob(pattern))
    if not files:
        raise ValueError(f"{key}: no file matches {pattern!r}")
    return files


def _read_custom(config: dict) -> list[Frame]:
    if not config["energy_files"] and not config["force_files"]:
        raise ValueError("dataset Custom needs energy_files, force_files or both")
    arg = config["dataset_arg"] or {}
    groups = {"coords": _glob(config["coord_files"], "coord_files"),
              "embed": _glob(config["embed_files"], "embed_files")}
    for kind, key, source in (("energy", "energy_files", config), ("forces", "force_files", config),
                              ("box", "box_files", arg), ("stress", "stress_files", arg)):
        if source.get(key):
            groups[kind] = _glob(source[key], key)
    counts = {kind: len(files) for kind, files in groups.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"Custom data set: numbers of files differ: {counts}")
    frames = []
    for i, coord_path in enumerate(groups["coords"]):
        paths = {kind: files[i] for kind, files in groups.items()}
        pos = np.load(coord_path)
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ValueError(f"{coord_path}: coordinates have shape {pos.shape}, expected [frames, atoms, 3]")
        n_frames, n_atoms = pos.shape[:2]
        pos = _per_frame(pos, n_frames, (n_atoms, 3), coord_path, "positions")
        z = np.load(paths["embed"]).astype(np.int64)
        if z.shape != (n_atoms,):
            raise ValueError(f"{paths['embed']}: atomic numbers have shape {z.shape}, but {coord_path} "
                             f"has {n_atoms} atoms per frame")
        labels = _custom_labels(paths, n_frames, n_atoms)
        frames += [_frame(z, pos[j], labels, j, f"{coord_path}:{j}") for j in range(n_frames)]
    return frames


def _custom_labels(paths: dict, n_frames: int, n_atoms: int) -> dict:
    """The label arrays of one Custom file group: energy [F], forces [F, n, 3], box and stress [F, 3, 3]."""
    labels = {}
    if "energy" in paths:
        labels["energy"] = _per_frame(np.load(paths["energy"]), n_frames, (1,), paths["energy"], "energies")[:, 0]
    if "forces" in paths:
        labels["forces"] = _per_frame(np.load(paths["forces"]), n_frames, (n_atoms, 3), paths["forces"], "forces")
    if "box" in paths:
        labels["box"] = _per_frame(np.load(paths["box"]), n_frames, (3, 3), paths["box"], "cells")
    if "stress" in paths:
        labels["stress"] = _stresses(np.load(paths["stress"]), n_frames, paths["stress"])
    return labels


def _frame(z: np.ndarray, pos: np.ndarray, labels: dict, j: int, source: str) -> Frame:
    """Frame ``j`` of per-frame label arrays (keys energy, forces, box, stress; each optional), uncharged."""

    def at(kind):
        return labels[kind][j] if kind in labels else None

    energy = at("energy")
    return Frame(z, pos, None if energy is None else float(energy), at("forces"), at("box"), at("stress"), 0.0, source)


def _read_hdf5(config: dict) -> list[Frame]:
    import h5py

    frames = []
    for path in _roots(config):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset_root: HDF5 file {path} does not exist")
        with h5py.File(path, "r") as f:
            for name, group in f.items():
                if name == "_metadata":
                    continue
                where = f"{path}[{name}]"
                if "pos" not in group or "types" not in group:
                    raise ValueError(f"{where}: a group needs 'pos' and 'types'")
                if "energy" not in group and "forces" not in group:
                    raise ValueError(f"{where}: a group needs 'energy', 'forces' or both")
                pos = np.asarray(group["pos"])
                if pos.ndim != 3 or pos.shape[2] != 3:
                    raise ValueError(f"{where}: pos has shape {pos.shape}, expected [frames, atoms, 3]")
                n_frames, n_atoms = pos.shape[:2]
                pos = _per_frame(pos, n_frames, (n_atoms, 3), where, "positions")
                types = np.asarray(group["types"]).astype(np.int64)
                if types.ndim == 1:
                    types = np.broadcast_to(types, (n_frames, len(types)))
                if types.shape != (n_frames, n_atoms):
                    raise ValueError(f"{where}: types have shape {types.shape}, expected ({n_frames}, {n_atoms}) "
                                     f"or ({n_atoms},)")
                labels = {}
                if "energy" in group:
                    labels["energy"] = _per_frame(np.asarray(group["energy"]), n_frames, (1,), where, "energies")[:, 0]
                if "forces" in group:
                    labels["forces"] = _per_frame(np.asarray(group["forces"]), n_frames, (n_atoms, 3), where, "forces")
                frames += [_frame(types[j], pos[j], labels, j, f"{where}:{j}") for j in range(n_frames)]
    return frames


def _roots(config: dict) -> list[str]:
    if not config["dataset_root"]:
        raise ValueError(f"dataset {config['dataset']} needs dataset_root (a file, or several separated by ';')")
    return [os.path.expanduser(p) for p in config["dataset_root"].split(";")]


def _read_ase(config: dict) -> list[Frame]:
    import ase.io
    from ase.io.formats import UnknownFileTypeError

    arg = config["dataset_arg"] or {}
    keys = {k: arg.get(f"{k}_key", k) for k in ("energy", "forces", "stress", "charge")}
    frames = []
    for path in _roots(config):
        try:
            images = ase.io.read(path, index=arg.get("index", ":"), format=arg.get("format"))
        except UnknownFileTypeError as error:
            raise ValueError(f"{path}: ASE does not know the file format {str(error)!r}; name it with dataset_arg "
                             "format (an ase.io format such as extxyz)") from None
        for j, atoms in enumerate(images if isinstance(images, list) else [images]):
            frames.append(_ase_frame(atoms, keys, f"{path}:{j}"))
    return frames


def _ase_frame(atoms, keys: dict, source: str) -> Frame:

    def value(key):
        results = atoms.calc.results if atoms.calc is not None else {}
        for store in (results, atoms.info, atoms.arrays):
            if key in store:
                return np.asarray(store[key], dtype=np.float64)
        return None

    if atoms.pbc.any() and not atoms.pbc.all():
        raise ValueError(f"{source}: partly periodic frames (pbc={atoms.pbc.tolist()}) are not supported")
    stress = value(keys["stress"])
    if stress is not None:
        if stress.size not in (6, 9):
            raise ValueError(f"{source}: stress has shape {stress.shape}, expected (6,) Voigt or (3, 3)")
        stress = voigt_6_to_full_3x3_stress(stress) if stress.size == 6 else stress.reshape(3, 3)
    energy, charge = value(keys["energy"]), value(keys["charge"])
    for name, scalar in (("energy", energy), ("charge", charge)):
        if scalar is not None and scalar.size != 1:
            raise ValueError(f"{source}: {name} must be one number, got shape {scalar.shape}")
    return Frame(
        z=atoms.numbers.astype(np.int64),
        pos=atoms.positions.astype(np.float64),
        energy=None if energy is None else energy.item(),
        forces=value(keys["forces"]),
        cell=atoms.cell.array.astype(np.float64) if atoms.pbc.all() else None,
        stress=stress,
        charge=0.0 if charge is None else charge.item(),
        source=source,
    )


_READERS: dict[str, Callable[[dict], list[Frame]]] = {"Custom": _read_custom, "HDF5": _read_hdf5, "ASE": _read_ase}
