"""TorchMD-Net's checkpoint format, both directions.

A ``torchmd-train`` checkpoint's ``state_dict`` is its Lightning module's: every key of the model
carries the ``model.`` prefix, the representation and some priors hold a neighbour-list ``box``
buffer [3, 3] (``OptimizedDistance``; fastnnp has no such modules), output heads written before
TorchMD-Net PR #314 use older MLP key names, and TensorNet checkpoints before TorchMD-Net 3.0
store two weights in the legacy ``[N, F, 3, 3]`` layout. :func:`model_state_from_lightning`
turns such a state dict into a fastnnp model's; :func:`lightning_state_from_model` writes one
that ``torchmdnet.models.model.load_model`` loads strictly.
"""

import re
import warnings
from typing import Any, Optional

import torch
from torch import Tensor

from ..models.registry import canonical_name

LIGHTNING_PREFIX = "model."
REPRESENTATION_BOX_KEY = "representation_model.distance.box"
# The box buffer each prior with a neighbour list holds, relative to ``prior_model.{i}.``.
# The neighbour-list box buffer of TorchMD-Net's ScalarPlusWeightedCoulomb head with a coulomb_cutoff.
COULOMB_BOX_KEY = "output_model.distance.box"
PRIOR_BOX_KEYS = {"ZBL": "distance.box", "Coulomb": "distance.box", "D2": "distances.box"}
LAYOUTS = ("auto", "legacy", "current")
# Architectures whose weights exist in the legacy [N, F, 3, 3] layout.
_TENSORNETS = ("tensornet", "tensornet2")

_LIGHTNING_PREFIX_PATTERN = re.compile(r"^model\.")
# TorchMD-Net PR #314 renamed the output heads' MLP keys: (old-name pattern, replacement).
_OUTPUT_HEAD_RENAMES = (
    (re.compile(r"^output_model\.output_network\.(\d+)\.update_net\.(\d+)\."), r"output_model.output_network.\1.update_net.layers.\2."),
    (re.compile(r"^output_model\.output_network\.([02])\.(weight|bias)$"), r"output_model.output_network.layers.\1.\2"),
)
_BOX_KEY_PATTERN = re.compile(r"(^|\.)distances?\.box$")


def fastnnp_key(key: str) -> str:
    """A checkpoint state-dict key as fastnnp names it: no ``model.`` prefix, current head names."""
    key = _LIGHTNING_PREFIX_PATTERN.sub("", key)
    for pattern, replacement in _OUTPUT_HEAD_RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _renamed(lightning_state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {fastnnp_key(key): value for key, value in lightning_state.items()}


def representation_box(lightning_state: dict[str, Tensor]) -> Optional[Tensor]:
    """The representation's stored box buffer [3, 3] (zeros when the model was not periodic), or None."""
    return _renamed(lightning_state).get(REPRESENTATION_BOX_KEY)


def tensornet_layout(hparams: dict, state: dict, layout: str, source: str = "checkpoint") -> str:
    """Which TensorNet weight layout a checkpoint uses: ``"legacy"`` ([N, F, 3, 3], before
    TorchMD-Net 3.0) or ``"current"`` ([N, 3, 3, F]).

    ``state`` is the checkpoint's state dict, as stored or with :func:`fastnnp_key` names.
    ``layout="auto"`` decides from markers and warns when it picks legacy: ``check_errors``
    in the hyper-parameters (checkpoints of 2024-01 .. v2.6.1) or no box buffer (before
    v2.5). Checkpoints of v2.6.2, or older than 2024-01 with a box buffer, carry no marker:
    pass ``layout="legacy"`` for those. TensorNet2 (and its aliases) stores the embedding's
    linear in the same two layouts (AceFF-2.0 checkpoints are legacy, marked by
    ``check_errors``), its layers' in the current one only.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    model = canonical_name(hparams.get("model"))
    if layout != "auto" or model not in _TENSORNETS:
        return layout if layout != "auto" else "current"
    if "check_errors" in hparams:
        reason = "its hyper-parameters contain 'check_errors' (TorchMD-Net < 3.0)"
    elif model == "tensornet2":  # TensorNet2 postdates the box buffer: check_errors is its only marker
        return "current"
    elif REPRESENTATION_BOX_KEY not in _renamed(state):
        reason = "it has no neighbour-list box buffer (TorchMD-Net < 2.5)"
    else:
        return "current"
    warnings.warn(
        f"{source}: assuming the legacy TensorNet weight layout [N, F, 3, 3] because {reason}; "
        f"pass layout='current' or layout='legacy' to choose explicitly",
        stacklevel=3,
    )
    return "legacy"


def model_state_from_lightning(lightning_state: dict[str, Tensor], hparams: dict, layout: str) -> dict[str, Tensor]:
    """A fastnnp model's state dict from a checkpoint's ``state_dict``: :func:`fastnnp_key` names,
    the current ``[N, 3, 3, F]`` TensorNet layout, no box buffers.

    ``layout`` is the TensorNet layout the checkpoint uses, ``"legacy"`` or ``"current"``
    (see :func:`tensornet_layout`); ``hparams`` its hyper-parameters (``model``, ``num_layers``).
    """
    state = _renamed(lightning_state)
    model = canonical_name(hparams.get("model"))
    if layout == "legacy" and model in _TENSORNETS:
        # TensorNet2's layers were written for [N, 3, 3, F] from the start: only its embedding moves.
        layers = int(hparams["num_layers"]) if model == "tensornet" else 0
        state = _legacy_tensornet_to_current(state, layers)
    return {key: value for key, value in state.items() if not _BOX_KEY_PATTERN.search(key)}


def lightning_state_from_model(model_state: dict[str, Tensor], hparams: dict) -> dict[str, Tensor]:
    """A checkpoint's ``state_dict`` for a fastnnp model's ``model_state``: ``model.`` prefix and the
    box buffers TorchMD-Net's modules hold (``box_vecs``, or zeros), in the precision of ``std``.

    ``hparams`` are the training hyper-parameters (``box_vecs``, ``prior_model``, and
    ``output_model`` / ``coulomb_cutoff``: the Coulomb head's neighbour-list box).
    """
    state = {f"{LIGHTNING_PREFIX}{key}": value for key, value in model_state.items()}
    dtype = model_state["std"].dtype
    box = hparams.get("box_vecs")
    box = torch.zeros(3, 3, dtype=dtype) if box is None else torch.as_tensor(box, dtype=dtype)
    state[f"{LIGHTNING_PREFIX}{REPRESENTATION_BOX_KEY}"] = box
    for i, name in enumerate(_prior_names(hparams.get("prior_model"))):
        if name in PRIOR_BOX_KEYS:
            state[f"{LIGHTNING_PREFIX}prior_model.{i}.{PRIOR_BOX_KEYS[name]}"] = torch.zeros(3, 3, dtype=dtype)
    if hparams.get("output_model") == "ScalarPlusWeightedCoulomb" and hparams.get("coulomb_cutoff") is not None:
        state[f"{LIGHTNING_PREFIX}{COULOMB_BOX_KEY}"] = torch.zeros(3, 3, dtype=dtype)
    return state


def _prior_names(prior_model: Any) -> list[str]:
    """The prior class names a ``prior_model`` setting (name, dict or list of either) lists, in order."""
    items = prior_model if isinstance(prior_model, list) else [prior_model] if prior_model else []
    return [name for item in items for name in (item if isinstance(item, dict) else [item])]


def _component_major_rows(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder output rows from channel-major (f*3 + k) to component-major (k*F + f)."""
    rows, cols = weight.shape
    weight = weight.reshape(rows // 3, 3, cols).transpose(0, 1).reshape(rows, cols)
    bias = bias.reshape(rows // 3, 3).transpose(0, 1).reshape(rows)
    return weight, bias


def _legacy_tensornet_to_current(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """``state`` with the scalar linears feeding TensorNet's [N, F, 3, 3] tensors reordered for
    [N, 3, 3, F]: the embedding's and those of the first ``num_layers`` layers."""
    state = dict(state)
    prefixes = ["representation_model.tensor_embedding.linears_scalar.1"]
    prefixes += [f"representation_model.layers.{layer}.linears_scalar.2" for layer in range(num_layers)]
    for prefix in prefixes:
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = _component_major_rows(
            state[f"{prefix}.weight"], state[f"{prefix}.bias"]
        )
    return state
