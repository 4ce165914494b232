"""``fastnnp.load_model``: TorchMD-Net checkpoints in, ready-to-call potentials out.

Keywords beyond fastnnp's own are TorchMD-Net's ``load_model`` kwargs: hyper-parameters to
replace, and ``compatibility_load`` / ``args``. Each is honoured with TorchMD-Net's meaning or
refused (:data:`KEYWORDS`, :func:`_apply_overrides`); a hyper-parameter override that nothing
in the built model reads is an error, as is an unknown keyword (naming the closest known one).
"""

import difflib
import os
import tempfile
import zipfile
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .checkpoint import LAYOUTS, CheckpointError, read_checkpoint
from .ensemble import Ensemble
from .models.factory import build_model, model_dtype
from .models.common.radial_table import MODES as RADIAL_MODES
from .models.common.radial_table import attach_radial_tables
from .models.registry import choose_backend

PathLike = Union[str, os.PathLike]


# TorchMD-Net load_model keywords fastnnp handles itself (not as a plain hyper-parameter
# replacement), with what it does; the README's table lists the same.
KEYWORDS: dict[str, str] = {
    "compatibility_load": "True: layout='legacy', False: layout='current' (TorchMD-Net's switch)",
    "args": "a dict replacing the checkpoint's hyper-parameters, as in TorchMD-Net",
    "static_shapes": "True: padded pairs of static shape on every call (TensorNet; torch backend)",
    "remove_ref_energy": "False re-enables the disabled Atomref of a delta-learned model",
    "max_num_neighbors": "accepted as an upper hint: fastnnp's searches have no cap",
    "coulomb_max_num_neighbors": "accepted as an upper hint: fastnnp's Coulomb sum has no cap",
    "coulomb_neighbor_strategy": "accepted: how TorchMD-Net finds Coulomb pairs; the sum is the same",
    "check_errors": "True accepted (fastnnp always checks); False refused",
    "box_vecs": "refused: pass the cell as box= to the model call",
    "derivative": "fastnnp's own argument, as TorchMD-Net's",
}
# Keywords accepted as hints: fastnnp computes what TorchMD-Net computes when its cap holds.
_HINTS = ("max_num_neighbors", "coulomb_max_num_neighbors", "coulomb_neighbor_strategy")
# Keywords that change nothing here or cannot be honoured: the reason and what to use instead.
_REFUSED = {
    "box_vecs": "the default box is the checkpoint's; pass the cell as box= to the model call",
}
# TorchMD-Net-only hyper-parameters of checkpoints, beyond torchmd-train's argparse keys.
_CHECKPOINT_KEYS = ("q_dim", "q_weights", "coulomb_cutoff", "repulsion", "check_errors", "spin", "charge")


class _ReadRecorder(dict):
    """A dict that remembers which keys were read (``[]``, ``get``, ``in``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


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
    **overrides: Any,
) -> nn.Module:
    """Load a TorchMD-Net checkpoint as a fastnnp potential, in eval mode.

    Called as ``model(z, pos, batch=None, box=None, q=None, s=None, extra_args=None,
    num_systems=None) -> (energy [n_systems, 1], neg_dy [n_atoms, 3])`` like TorchMD-Net's
    ``load_model(ckpt, derivative=True)``. A list of paths, or a ``.zip`` of checkpoints, gives
    an :class:`Ensemble` (mean; with ``return_std`` also the spread).

    Args:
        derivative: also return forces (minus the energy gradient); else ``None``.
        device: where the model lives (default CPU); ``"cuda"`` needs a GPU.
        dtype: float32 or float64; default: the checkpoint's training precision.
        layout: TensorNet / TensorNet2 weight layout ``"auto"`` | ``"legacy"`` | ``"current"``
            (see :func:`fastnnp.checkpoint.tensornet_layout`; AceFF-2.0 checkpoints are legacy);
            TorchMD-Net's ``compatibility_load=True`` / ``False`` means legacy / current.
        trust_checkpoint: allow files that need arbitrary unpickling (runs code from them).
        return_std: an ensemble also returns the members' spread (ensembles only).
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
        overrides: TorchMD-Net's ``load_model`` kwargs: hyper-parameters to replace (each must
            be read by the model built, else ValueError), and the keywords of :data:`KEYWORDS`
            with the meaning given there; e.g. ``remove_ref_energy=False`` turns a
            delta-learned model's disabled Atomref back on. Unknown keywords are a ValueError
            naming the closest known one.
    """
    _check_arguments(path, derivative, device, dtype, trust_checkpoint, return_std)
    if "compatibility_load" in overrides:
        layout = _compatibility_layout(overrides.pop("compatibility_load"), layout)
    options = dict(
        derivative=derivative, device=device, dtype=dtype, layout=layout, trust_checkpoint=trust_checkpoint,
        backend=backend, radial=radial,
    )
    if isinstance(path, (list, tuple)):
        return Ensemble([_load_single(p, overrides, **options) for p in path], return_std=return_std)
    if str(path).endswith(".zip"):
        return Ensemble(_load_zip(path, overrides, options), return_std=return_std)
    if return_std:
        raise ValueError("return_std=True needs an ensemble: a list of checkpoints or a .zip of them")
    return _load_single(path, overrides, **options)


def _check_arguments(path, derivative, device, dtype, trust_checkpoint, return_std) -> None:
    """TypeError / ValueError naming the argument, before any file is read."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise ValueError("path: an empty list of checkpoints")
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"path must be a checkpoint path (str or os.PathLike) or a list of them, got {type(p).__name__}")
    for name, value in (("derivative", derivative), ("trust_checkpoint", trust_checkpoint), ("return_std", return_std)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"device={device!r} is not a device: {error}") from None
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but no CUDA GPU is available (torch.cuda.is_available() is False); use device='cpu'")


def _compatibility_layout(compatibility_load: Any, layout: str) -> str:
    """TorchMD-Net's ``compatibility_load`` as fastnnp's ``layout`` (an explicit, different layout is an error)."""
    if not isinstance(compatibility_load, bool):
        raise TypeError(f"compatibility_load must be True or False, got {compatibility_load!r}")
    chosen = "legacy" if compatibility_load else "current"
    if layout not in ("auto", chosen):
        raise ValueError(
            f"compatibility_load={compatibility_load} means layout={chosen!r}, but layout={layout!r} was passed: give one"
        )
    return chosen


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
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if radial not in RADIAL_MODES:
        raise ValueError(f"unknown radial={radial!r}; choose one of {', '.join(RADIAL_MODES)}")
    checkpoint = read_checkpoint(path, layout=layout, trust_checkpoint=trust_checkpoint)
    overrides = dict(overrides)
    args = overrides.pop("args", None)
    if args is not None and not isinstance(args, dict):
        raise TypeError(f"args must be a dict of hyper-parameters (TorchMD-Net's), got {type(args).__name__}")
    hparams = _ReadRecorder(checkpoint.hparams if args is None else args)
    delta_learning = bool(dict.get(hparams, "remove_ref_energy", False))
    static_shapes = _apply_overrides(hparams, overrides)
    device = torch.device(device or "cpu")
    if dtype is not None and "precision" in overrides and model_dtype(hparams) != dtype:
        raise ValueError(f"precision={overrides['precision']!r} and dtype={dtype} disagree: give one")
    hparams.read.clear()
    backend = choose_backend(backend, hparams, dtype or model_dtype(hparams), device)
    model = build_model(
        hparams, list(checkpoint.state_dict), derivative, checkpoint.default_box, backend=backend,
        static_shapes=static_shapes,
    )
    unread = sorted(set(overrides) - hparams.read - set(KEYWORDS))
    if unread:
        raise ValueError(
            f"{path}: the override(s) {unread} are read by nothing in this {hparams.get('model')} model "
            "(training settings, or settings of another architecture or head): remove them"
        )
    if "remove_ref_energy" in overrides and not delta_learning:
        raise ValueError(
            f"{path}: remove_ref_energy={overrides['remove_ref_energy']!r} acts on delta-learned models only "
            "(trained with remove_ref_energy: True); this one was not: remove it"
        )
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


def _apply_overrides(hparams: dict, overrides: dict) -> bool:
    """Put ``overrides`` into ``hparams`` (refusing what :data:`_REFUSED` lists, unknown keys and
    ``check_errors=False``); return ``static_shapes``."""
    static_shapes = False
    for key, value in overrides.items():
        if key in _REFUSED:
            raise ValueError(f"{key}={value!r} is not supported: {_REFUSED[key]}")
        if key == "check_errors" and value is not True:
            raise ValueError(f"check_errors={value!r} is not supported: fastnnp always checks its inputs (its searches never overflow)")
        if key == "static_shapes":
            if not isinstance(value, bool):
                raise TypeError(f"static_shapes must be True or False, got {value!r}")
            static_shapes = value
            continue
        if key in _HINTS or key == "check_errors":
            continue
        if not dict.__contains__(hparams, key) and key not in _known_keys():
            close = difflib.get_close_matches(key, sorted(_known_keys() | set(dict.keys(hparams))), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown load_model keyword {key}={value!r}: neither a fastnnp argument nor a TorchMD-Net hyper-parameter{hint}")
        dict.__setitem__(hparams, key, value)
    return static_shapes


def _known_keys() -> set[str]:
    """Every keyword load_model knows: its own, :data:`KEYWORDS`, torchmd-train's and checkpoints' hyper-parameters."""
    from .training.config import TORCHMD_TRAIN_DEFAULTS  # only needed to judge an unknown keyword

    own = ("derivative", "device", "dtype", "layout", "trust_checkpoint", "return_std", "backend", "radial")
    return {*own, *KEYWORDS, *TORCHMD_TRAIN_DEFAULTS, *_CHECKPOINT_KEYS}


def _enable_atomref(model: nn.Module) -> None:
    priors = list(model.prior_model or ())
    if not priors or type(priors[-1]).__name__ != "Atomref":
        raise ValueError("remove_ref_energy=False needs an Atomref prior (trained with enable=False) as the last prior")
    priors[-1].enable = True
