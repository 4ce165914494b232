"""``fastnnp.load_model``: TorchMD-Net checkpoints in, ready-to-call potentials out."""

import os
import tempfile
import warnings
import zipfile
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .checkpoint import CheckpointError, read_checkpoint
from .ensemble import Ensemble
from .models.factory import build_model, model_dtype
from .models.common.radial_table import MODES as RADIAL_MODES
from .models.common.radial_table import attach_radial_tables
from .models.registry import choose_backend

PathLike = Union[str, os.PathLike]


def load_model(
    path: Union[PathLike, Sequence[PathLike]],
    derivative: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    layout: str = "auto",
    trust_checkpoint: bool = False,
    return_std: bool = False,
    backend: str = "auto",
    radial: str = "auto",
    **overrides,
) -> nn.Module:
    """Load a TorchMD-Net checkpoint as a fastnnp potential, in eval mode.

    Called as ``model(z, pos, batch, box=None, q=None) -> (energy [n_systems, 1], neg_dy
    [n_atoms, 3])`` like TorchMD-Net's ``load_model(ckpt, derivative=True)``. A list of
    paths, or a ``.zip`` of checkpoints, gives an :class:`Ensemble` (mean; with
    ``return_std`` also the spread).

    Args:
        derivative: also return forces (minus the energy gradient); else ``None``.
        device: where the model lives (default CPU).
        dtype: float32 or float64; default: the checkpoint's training precision.
        layout: TensorNet / TensorNet2 weight layout ``"auto"`` | ``"legacy"`` | ``"current"``
            (see :func:`fastnnp.checkpoint.tensornet_layout`; AceFF-2.0 checkpoints are legacy).
        trust_checkpoint: allow files that need arbitrary unpickling (runs code from them).
        backend: ``"triton"`` runs the model on fused Triton kernels (float32, on CUDA; on CPU
            only under ``TRITON_INTERPRET=1``; parameters frozen; TensorNet), ``"torch"`` the
            pure-torch reference, ``"auto"`` (default) Triton on CUDA when it can serve the
            checkpoint (:mod:`fastnnp.models.registry`), else torch.
        radial: the per-pair radial filters: ``"table"`` error-bounded piecewise-cubic tables
            built from the checkpoint's weights (:mod:`fastnnp.models.common.radial_table`;
            a filter whose table misses its bound runs exactly, with a warning), ``"exact"``
            the model's own layers, ``"auto"`` (default) tables for float32 and the exact
            filters for float64 (tables there miss TorchMD-Net's 1e-9 float64 parity). Both
            backends read the tables; on Triton (float32) ``"auto"`` gives the table kernels
            and ``"exact"`` the kernels that run the radial MLPs.
        overrides: hyper-parameters to replace, as TorchMD-Net's ``load_model`` kwargs; e.g.
            ``remove_ref_energy=False`` turns a delta-learned model's disabled Atomref back on.
    """
    options = dict(
        derivative=derivative, device=device, dtype=dtype, layout=layout, trust_checkpoint=trust_checkpoint,
        backend=backend, radial=radial,
    )
    if isinstance(path, (list, tuple)):
        return Ensemble([_load_single(p, overrides, **options) for p in path], return_std=return_std)
    if str(path).endswith(".zip"):
        return Ensemble(_load_zip(path, overrides, options), return_std=return_std)
    return _load_single(path, overrides, **options)


def _load_zip(path: PathLike, overrides: dict, options: dict) -> list[nn.Module]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ensemble archive not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path} is not a readable zip archive: {error}") from error
    with archive, tempfile.TemporaryDirectory() as tmp:
        names = sorted(n for n in archive.namelist() if n.endswith(".ckpt"))
        if not names:
            raise CheckpointError(f"{path} contains no .ckpt files")
        members = []
        for name in names:
            target = os.path.join(tmp, f"{len(members)}.ckpt")
            with archive.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
            members.append(_load_single(target, overrides, **options))
    return members


def _load_single(path, overrides, derivative, device, dtype, layout, trust_checkpoint, backend, radial) -> nn.Module:
    checkpoint = read_checkpoint(path, layout=layout, trust_checkpoint=trust_checkpoint)
    hparams = dict(checkpoint.hparams)
    delta_learning = bool(hparams.get("remove_ref_energy", False))
    for key, value in overrides.items():
        if key not in hparams:
            warnings.warn(f"unknown hyper-parameter override {key}={value!r}", stacklevel=3)
        hparams[key] = value
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if radial not in RADIAL_MODES:
        raise ValueError(f"unknown radial={radial!r}; choose one of {', '.join(RADIAL_MODES)}")
    device = torch.device(device or "cpu")
    backend = choose_backend(backend, hparams, dtype or model_dtype(hparams), device)
    model = build_model(hparams, list(checkpoint.state_dict), derivative, checkpoint.default_box, backend=backend)
    if delta_learning and overrides.get("remove_ref_energy") is False:
        _enable_atomref(model)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the architecture its hyper-parameters describe: {error}") from error
    model.eval()
    if backend == "triton":
        model.requires_grad_(False)
    if dtype is not None:
        model = model.to(dtype)
    attach_radial_tables(model.representation_model, model.dtype, radial)
    return model.to(device)


def _enable_atomref(model: nn.Module) -> None:
    priors = list(model.prior_model or ())
    if not priors or type(priors[-1]).__name__ != "Atomref":
        raise ValueError("remove_ref_energy=False needs an Atomref prior (trained with enable=False) as the last prior")
    priors[-1].enable = True
