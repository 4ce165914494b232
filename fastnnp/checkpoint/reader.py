"""Reading TorchMD-Net checkpoints (any ``torchmd-train`` 2.x/3.x ``.ckpt``) safely.

Checkpoints are untrusted files: they are opened with ``torch.load(weights_only=True)``; one
that needs arbitrary unpickling is refused unless the caller opts in with
``trust_checkpoint=True``. The archive's checksums are verified first (:mod:`.archive`) and
every weight must be finite. What the state dict holds is TorchMD-Net's format (:mod:`.format`).
"""

import io
import os
import pickle
import re
from collections.abc import Mapping
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .archive import CheckpointError, verified_archive
from .format import fastnnp_key, model_state_from_lightning, representation_box, tensornet_layout

# Stored tensors that may hold NaN by design: D2's dispersion tables mark elements without parameters.
NON_FINITE_ALLOWED = re.compile(r"^prior_model\.\d+\.(C_6|R_r)$")


class Checkpoint(NamedTuple):
    """Hyper-parameters, model state dict (keys without the Lightning ``model.`` prefix, in
    the current ``[N, 3, 3, F]`` layout, no box buffers) and the stored default box or None."""

    hparams: dict
    state_dict: dict[str, Tensor]
    default_box: Optional[Tensor]


def read_checkpoint(path: str | os.PathLike, layout: str = "auto", trust_checkpoint: bool = False) -> Checkpoint:
    """Read ``path`` and normalise its state dict (:func:`.format.model_state_from_lightning`);
    see :func:`.format.tensornet_layout` for ``layout``.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` for any file that
    is not an intact TorchMD-Net checkpoint: damaged or truncated (:func:`.archive.verified_archive`),
    needing arbitrary unpickling without ``trust_checkpoint``, another format or content, or
    weights that are not finite.
    """
    raw = _load(path, trust_checkpoint)
    if not isinstance(raw, Mapping) or "state_dict" not in raw or "hyper_parameters" not in raw:
        found = sorted(map(str, raw))[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(
            f"{path} is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters', found {found}"
        )
    stored, hparams = raw["state_dict"], raw["hyper_parameters"]
    if not isinstance(hparams, Mapping) or not isinstance(stored, Mapping):
        raise CheckpointError(f"{path} is not a TorchMD-Net checkpoint: 'state_dict' and 'hyper_parameters' must be "
                              f"dicts, got {type(stored).__name__} and {type(hparams).__name__}")
    _check_tensors(stored, path)
    hparams = dict(hparams)
    box = representation_box(stored)
    default_box = box.clone() if box is not None and bool(box.abs().sum() > 0) else None
    if default_box is None and hparams.get("box_vecs") is not None:
        default_box = torch.as_tensor(hparams["box_vecs"], dtype=torch.float64)
    chosen = tensornet_layout(hparams, stored, layout, str(path))
    try:
        state = model_state_from_lightning(stored, hparams, chosen)
    except KeyError as error:  # a legacy-layout conversion needs num_layers and the weights it reorders
        raise CheckpointError(f"{path} is not a complete TorchMD-Net {hparams.get('model')} checkpoint: it lacks "
                              f"{error} (layout {chosen!r})") from error
    return Checkpoint(hparams, state, default_box)


def _check_tensors(stored: Mapping, path) -> None:
    """Every state-dict entry a tensor named by a string, every weight finite (except
    :data:`NON_FINITE_ALLOWED`)."""
    for key, value in stored.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{path} is not a TorchMD-Net checkpoint: its state_dict entry {key!r} is a "
                                  f"{type(value).__name__}, not a tensor")
        if value.is_floating_point() and not NON_FINITE_ALLOWED.match(fastnnp_key(key)):
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{path} holds non-finite weights: {bad} of the {value.numel()} entries of {key!r} are NaN or "
                    "infinite (a diverged training run saves such weights); the model would return NaN"
                )


def _load(path, trust_checkpoint: bool) -> dict:
    """The unpickled content of the verified archive at ``path``."""
    data = verified_archive(path)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust_checkpoint)
    except MemoryError:
        raise
    except pickle.UnpicklingError as error:
        unsafe = [] if trust_checkpoint else _unsafe_globals(data)
        if unsafe:
            what = f"a {unsafe[0]} object" if len(unsafe) == 1 else f"objects of {', '.join(unsafe[:4])}"
            raise CheckpointError(
                f"{path} needs arbitrary unpickling (it stores {what}), which can run code from the file; load it "
                f"only if you trust it, with trust_checkpoint=True"
            ) from error
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_first_line(error)}") from error
    except Exception as error:  # noqa: BLE001 (an intact archive whose pickle torch cannot read, for any reason)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_first_line(error)}") from error


def _unsafe_globals(data: bytes) -> list[str]:
    """The classes and functions the archive's pickle names beyond torch's weights-only allowlist
    (a scan: nothing is run); empty where the pickle cannot even be scanned."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 (a pickle too damaged to scan is reported as unreadable)
        return []


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text[:300]}"
