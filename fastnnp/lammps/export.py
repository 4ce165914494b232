"""``fastnnp lammps-export``: a checkpoint as a LAMMPS ML-IAP unified model file."""

import os
from typing import Optional, Sequence, Union

import torch

from ..loading import load_model
from .unified import FastNNPUnified, checked_symbols

PathLike = Union[str, os.PathLike]


def build_unified(
    checkpoint: PathLike,
    elements: Sequence[str],
    dtype: Optional[torch.dtype] = None,
    device: Union[str, torch.device] = "cpu",
    **load_kwargs,
) -> FastNNPUnified:
    """The ML-IAP unified model of ``checkpoint`` (loaded on the torch backend, untrusted
    checkpoints refused as by :func:`fastnnp.load_model`) for LAMMPS element names ``elements``;
    ``load_kwargs`` go to ``load_model`` (``radial``, ``layout``, ``trust_checkpoint``)."""
    checked_symbols(elements)  # before the (slower) load
    if not isinstance(checkpoint, (str, os.PathLike)) or os.fspath(checkpoint).endswith(".zip"):
        raise ValueError(f"LAMMPS runs one model: give one .ckpt file, not an ensemble ({checkpoint!r})")
    if load_kwargs.get("backend", "torch") != "torch":
        raise ValueError("LAMMPS pair lists run on the torch backend only (backend='torch')")
    load_kwargs["backend"] = "torch"
    model = load_model(checkpoint, derivative=False, device=device, dtype=dtype, **load_kwargs)
    return FastNNPUnified(model, elements)


def check_model_path(path: PathLike) -> str:
    """``path`` as a string; ValueError unless it ends in .pt or .pth (what LAMMPS ``torch.load``s)."""
    path = os.fspath(path)
    if not path.endswith((".pt", ".pth")):
        raise ValueError(f"LAMMPS loads ML-IAP unified models with torch.load only from .pt or .pth files, got {path}")
    return path


def save_unified(unified: FastNNPUnified, path: PathLike) -> None:
    """Write ``unified`` with ``torch.save`` (a pickle: LAMMPS's coupling ``torch.load``s the whole
    object, so the file runs code when loaded, like any ML-IAP Python model). Written to a
    temporary file and renamed, so an interrupted export leaves no partial file."""
    path = check_model_path(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(unified, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_unified(path: PathLike) -> FastNNPUnified:
    """Read a file :func:`save_unified` wrote (full unpickling: only open files you trust)."""
    unified = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(unified, FastNNPUnified):
        raise TypeError(f"{path} holds a {type(unified).__name__}, not a fastnnp ML-IAP model")
    return unified
