"""Training checkpoints: TorchMD-Net's Lightning layout plus fastnnp's resume state, written atomically.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
``torch.load(weights_only=True)``:

- ``state_dict``: the model's tensors in TorchMD-Net's format (:mod:`fastnnp.checkpoint.format`:
  Lightning ``model.`` prefix, neighbour-list ``box`` buffers, also the Coulomb head's), so that
  ``torchmdnet.models.model.load_model`` loads it strictly;
- ``hyper_parameters``: the full training config plus ``prior_args``, as ``torchmd-train`` stores them;
- ``epoch``, ``global_step``: completed epochs - 1 (Lightning's count) and optimizer steps;
- ``fastnnp``: everything ``--resume`` needs (optimizer, scheduler, weight EMA, loss EMAs, RNG
  states, splits, early-stopping and best-metric state, metric history). TorchMD-Net ignores it.
"""

from __future__ import annotations

import glob
import os
import pickle
import random
import tempfile
import zipfile
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError
from ..checkpoint.format import lightning_state_from_model, model_state_from_lightning

TEMP_SUFFIX = ".tmp"
ZIP_MAGIC = b"PK\x03\x04"  # how a torch.save archive starts


def save_atomic(checkpoint: dict, path: str | os.PathLike) -> None:
    """Write ``checkpoint`` to ``path`` so that ``path`` is always either the old or the complete new file.

    The data go to a temporary file in the same folder, are flushed and fsynced, and the file is
    renamed over ``path`` (``os.replace``); a crash leaves at most a stray ``.*.tmp`` file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files that an interrupted :func:`save_atomic` left in ``folder``."""
    for temp in glob.glob(os.path.join(os.fspath(folder), f".*{TEMP_SUFFIX}")):
        os.unlink(temp)


def prior_args(prior_model: Any) -> list[dict]:
    """``prior_args`` for the hyper-parameters: the arguments each prior of ``prior_model`` was built with."""
    items = prior_model if isinstance(prior_model, list) else [prior_model] if prior_model else []
    args: list[dict] = []
    for item in items:
        if isinstance(item, dict):
            args += [dict(value or {}) for value in item.values()]
        else:
            args.append({})
    return args


def lightning_state_dict(model: nn.Module, hparams: dict) -> dict[str, torch.Tensor]:
    """``model``'s state dict as TorchMD-Net's LNNP holds it: ``model.`` prefix and box buffers
    (:func:`~fastnnp.checkpoint.lightning_state_from_model`)."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return lightning_state_from_model(state, hparams)


def model_state_from(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The fastnnp model state dict of a checkpoint written by :func:`build_checkpoint` (no box buffers)."""
    return model_state_from_lightning(checkpoint["state_dict"], checkpoint["hyper_parameters"], "current")


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (tensors and plain values)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_checkpoint(
    model: nn.Module,
    hparams: dict,
    epoch: int,
    global_step: int,
    resume: Optional[dict] = None,
) -> dict:
    """A checkpoint dict of ``model`` after ``epoch`` completed epochs (0-based index of the last one).

    ``hparams`` is the training config (every torchmd-train key); ``resume`` the trainer's state.
    """
    hyper_parameters = dict(hparams)
    hyper_parameters["prior_args"] = prior_args(hparams.get("prior_model"))
    checkpoint = {
        "epoch": int(epoch),
        "global_step": int(global_step),
        "state_dict": lightning_state_dict(model, hparams),
        "hyper_parameters": hyper_parameters,
    }
    if resume is not None:
        checkpoint["fastnnp"] = resume
    return checkpoint


# What torch.load raises for a damaged torch.save archive.
_DAMAGED = (RuntimeError, EOFError, zipfile.BadZipFile)


class ForeignCheckpoint(CheckpointError):
    """A checkpoint that holds objects beyond tensors and plain values (e.g. torchmd-train's), so not fastnnp's."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written here (``weights_only=True``: tensors and plain values only).

    FileNotFoundError for a missing file; :class:`ForeignCheckpoint` for one that needs arbitrary
    unpickling (not written by fastnnp); :class:`~fastnnp.checkpoint.CheckpointError` for any other
    file that is not an intact checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # torch.load would try its pre-1.6 format, failing in many ways
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (a torch.save zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ForeignCheckpoint(f"{path} holds objects beyond tensors and plain values: not written by fastnnp") from error
    except _DAMAGED as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {reason}") from error
