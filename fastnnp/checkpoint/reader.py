"""Reading TorchMD-Net checkpoints (any ``torchmd-train`` 2.x/3.x ``.ckpt``) safely.

Checkpoints are untrusted files: they are opened with ``torch.load(weights_only=True)``; one
that needs arbitrary unpickling is refused unless the caller opts in with
``trust_checkpoint=True``. What the state dict holds is TorchMD-Net's format (:mod:`.format`).
"""

import os
import pickle
import re
import zipfile
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .format import model_state_from_lightning, representation_box, tensornet_layout


class CheckpointError(ValueError):
    """A file that is not a loadable TorchMD-Net checkpoint."""


class Checkpoint(NamedTuple):
    """Hyper-parameters, model state dict (keys without the Lightning ``model.`` prefix, in
    the current ``[N, 3, 3, F]`` layout, no box buffers) and the stored default box or None."""

    hparams: dict
    state_dict: dict[str, Tensor]
    default_box: Optional[Tensor]


def read_checkpoint(path: str | os.PathLike, layout: str = "auto", trust_checkpoint: bool = False) -> Checkpoint:
    """Read ``path`` and normalise its state dict (:func:`.format.model_state_from_lightning`);
    see :func:`.format.tensornet_layout` for ``layout``."""
    raw = _load(path, trust_checkpoint)
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        found = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path} is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters', found {found}"
        )
    hparams = dict(raw["hyper_parameters"])
    stored = raw["state_dict"]
    box = representation_box(stored)
    default_box = box.clone() if box is not None and bool(box.abs().sum() > 0) else None
    if default_box is None and hparams.get("box_vecs") is not None:
        default_box = torch.as_tensor(hparams["box_vecs"], dtype=torch.float64)
    chosen = tensornet_layout(hparams, stored, layout, str(path))
    return Checkpoint(hparams, model_state_from_lightning(stored, hparams, chosen), default_box)


def _load(path, trust_checkpoint: bool) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as error:
        if trust_checkpoint:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
        needed = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needed:
            raise CheckpointError(
                f"{path} needs arbitrary unpickling (it stores a {needed.group(1)} object), which can run "
                f"code from the file; load it only if you trust it, with trust_checkpoint=True"
            ) from error
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or not a checkpoint): {error}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated): {error}") from error
