"""Reading TorchMD-Net checkpoints (any ``torchmd-train`` 2.x/3.x ``.ckpt``) safely.

Checkpoints are untrusted files: they are opened with ``torch.load(weights_only=True)``; one
that needs arbitrary unpickling is refused unless the caller opts in with
``trust_checkpoint=True``.
"""

import os
import pickle
import re
import warnings
import zipfile
from typing import NamedTuple, Optional

import torch
from torch import Tensor

LAYOUTS = ("auto", "legacy", "current")

# TorchMD-Net PR #314 renamed the output heads' MLP keys.
_KEY_RENAMES = (
    (re.compile(r"^output_model\.output_network\.(\d+)\.update_net\.(\d+)\."), r"output_model.output_network.\1.update_net.layers.\2."),
    (re.compile(r"^output_model\.output_network\.([02])\.(weight|bias)$"), r"output_model.output_network.layers.\1.\2"),
)
# Neighbour-list box buffers (TorchMD-Net's OptimizedDistance); fastnnp has no such modules.
_BOX_KEY = re.compile(r"(^|\.)distances?\.box$")
_REPRESENTATION_BOX = "representation_model.distance.box"


class CheckpointError(ValueError):
    """A file that is not a loadable TorchMD-Net checkpoint."""


class Checkpoint(NamedTuple):
    """Hyper-parameters, model state dict (keys without the Lightning ``model.`` prefix, in
    the current ``[N, 3, 3, F]`` layout, no box buffers) and the stored default box or None."""

    hparams: dict
    state_dict: dict[str, Tensor]
    default_box: Optional[Tensor]


def read_checkpoint(path: str | os.PathLike, layout: str = "auto", trust_checkpoint: bool = False) -> Checkpoint:
    """Read ``path`` and normalise its state dict; see :func:`tensornet_layout` for ``layout``."""
    raw = _load(path, trust_checkpoint)
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        found = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path} is not a TorchMD-Net checkpoint: expected 'state_dict' and 'hyper_parameters', found {found}"
        )
    hparams = dict(raw["hyper_parameters"])
    state = {}
    for key, value in raw["state_dict"].items():
        key = re.sub(r"^model\.", "", key)
        for pattern, replacement in _KEY_RENAMES:
            key = pattern.sub(replacement, key)
        state[key] = value
    box = state.get(_REPRESENTATION_BOX)
    default_box = box.clone() if box is not None and bool(box.abs().sum() > 0) else None
    if default_box is None and hparams.get("box_vecs") is not None:
        default_box = torch.as_tensor(hparams["box_vecs"], dtype=torch.float64)
    chosen = tensornet_layout(hparams, state, layout, str(path))
    if chosen == "legacy" and hparams.get("model") == "tensornet":
        state = _legacy_to_current(state, int(hparams["num_layers"]))
    state = {k: v for k, v in state.items() if not _BOX_KEY.search(k)}
    return Checkpoint(hparams, state, default_box)


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


def tensornet_layout(hparams: dict, state: dict, layout: str, source: str = "checkpoint") -> str:
    """Which TensorNet weight layout a checkpoint uses: ``"legacy"`` ([N, F, 3, 3], before
    TorchMD-Net 3.0) or ``"current"`` ([N, 3, 3, F]).

    ``layout="auto"`` decides from markers and warns when it picks legacy: ``check_errors``
    in the hyper-parameters (checkpoints of 2024-01 .. v2.6.1) or no box buffer (before
    v2.5). Checkpoints of v2.6.2, or older than 2024-01 with a box buffer, carry no marker:
    pass ``layout="legacy"`` for those.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout != "auto" or hparams.get("model") != "tensornet":
        return layout if layout != "auto" else "current"
    if "check_errors" in hparams:
        reason = "its hyper-parameters contain 'check_errors' (TorchMD-Net < 3.0)"
    elif _REPRESENTATION_BOX not in state:
        reason = "it has no neighbour-list box buffer (TorchMD-Net < 2.5)"
    else:
        return "current"
    warnings.warn(
        f"{source}: assuming the legacy TensorNet weight layout [N, F, 3, 3] because {reason}; "
        f"pass layout='current' or layout='legacy' to choose explicitly",
        stacklevel=3,
    )
    return "legacy"


def _interleave_rows(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder output rows from channel-major (f*3 + k) to component-major (k*F + f)."""
    rows, cols = weight.shape
    weight = weight.reshape(rows // 3, 3, cols).transpose(0, 1).reshape(rows, cols)
    bias = bias.reshape(rows // 3, 3).transpose(0, 1).reshape(rows)
    return weight, bias


def _legacy_to_current(state: dict, num_layers: int) -> dict:
    state = dict(state)
    prefixes = ["representation_model.tensor_embedding.linears_scalar.1"]
    prefixes += [f"representation_model.layers.{l}.linears_scalar.2" for l in range(num_layers)]
    for prefix in prefixes:
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = _interleave_rows(
            state[f"{prefix}.weight"], state[f"{prefix}.bias"]
        )
    return state
