"""Build a :class:`NeuralPotential` from TorchMD-Net hyper-parameters (``torchmd-train`` args)."""

from typing import Optional

import torch
from torch import Tensor

from ..neighbors.static import padded_neighbor_list, traceable_neighbor_list
from ..priors import build_priors
from . import registry
from .output_modules import head_arguments, infer_num_hidden_layers, output_model_class
from .potential import NeuralPotential

_PRECISIONS = {32: torch.float32, 64: torch.float64}
# Representations whose every pair term carries the cosine cutoff, so that a padded pair list
# (:mod:`fastnnp.neighbors.static`) is exact: their torch path compiles and exports.
PADDING_EXACT = ("tensornet",)
# Priors with a neighbour search of their own (dynamic shapes: not traceable).
PAIR_PRIORS = ("ZBL", "D2", "Coulomb")


def model_dtype(hparams: dict) -> torch.dtype:
    """The dtype a checkpoint was trained in (``precision`` 32 or 64)."""
    precision = str(hparams.get("precision", 32)).replace("-true", "")
    if not precision.isdigit() or int(precision) not in _PRECISIONS:
        raise ValueError(f"unsupported precision {hparams.get('precision')!r}: fastnnp runs float32 (32) or float64 (64)")
    return _PRECISIONS[int(precision)]


def build_model(
    hparams: dict,
    state_dict_keys: Optional[list[str]] = None,
    derivative: bool = True,
    default_box: Optional[Tensor] = None,
    backend: str = "torch",
    static_shapes: bool = False,
) -> NeuralPotential:
    """A randomly initialised potential with the architecture ``hparams`` describe.

    ``state_dict_keys`` (of the checkpoint to be loaded) fix the output head's MLP depth,
    which TorchMD-Net's own ``output_mlp_num_layers`` does not reliably describe.
    ``hparams["model"]`` may be an alias (:data:`fastnnp.models.registry.ALIASES`).
    ``backend`` "triton" runs TensorNet's neighbour search and edge work on Triton kernels
    (float32, frozen parameters); "torch" is the reference. ``static_shapes`` (TorchMD-Net's)
    makes the torch path search padded pairs of static shape on every call (TensorNet only);
    without it the padded search runs only while ``torch.compile`` / ``torch.export`` traces.
    """
    name = hparams.get("model")
    entry = registry.architecture(name)
    missing = [k for k in registry.COMMON_KEYS + entry.keys if k not in hparams]
    if missing:
        raise ValueError(f"hyper-parameters lack {', '.join(missing)} needed to build model {name!r}")
    if (hparams.get("atom_filter") or -1) > -1:
        raise ValueError("atom_filter is not supported: fastnnp evaluates every atom")
    reason = registry.unsupported(name, backend, hparams)
    if reason is not None:
        raise ValueError(reason)
    dtype = model_dtype(hparams)
    representation = registry.representation_class(name, backend)(
        **registry.shared_arguments(hparams), **entry.arguments(hparams), dtype=dtype
    )
    if state_dict_keys is not None:
        hidden_layers = infer_num_hidden_layers(state_dict_keys)
    else:
        hidden_layers = int(hparams.get("output_mlp_num_layers", 0) or 0)
    head = output_model_class(hparams["output_model"], equivariant=entry.equivariant_head)(
        hparams["embedding_dimension"],
        activation=hparams["activation"],
        reduce_op=hparams.get("reduce_op", "add"),
        dtype=dtype,
        num_hidden_layers=hidden_layers,
        **head_arguments(hparams),
    )
    priors = build_priors(hparams) if head.allow_prior_model else []
    trace_refusal = _trace_refusal(registry.canonical_name(name), backend, priors)
    if static_shapes and trace_refusal is not None:
        raise ValueError(f"static_shapes=True is not available: {trace_refusal}")
    if backend == "torch" and trace_refusal is None:
        representation.neighbor_search = padded_neighbor_list if static_shapes else traceable_neighbor_list
    model = NeuralPotential(
        representation, head, [p.to(dtype) for p in priors], derivative=derivative,
        max_z=int(hparams["max_z"]), dtype=dtype,
        default_box=None if default_box is None else default_box.to(dtype),
    )
    model.trace_refusal = trace_refusal
    return model.to(dtype)


def _trace_refusal(name: str, backend: str, priors: list) -> Optional[str]:
    """Why ``torch.compile`` / ``torch.export`` cannot trace this model's torch path, or None."""
    if backend != "torch":
        return None
    if name not in PADDING_EXACT:
        return (
            f"the static-shape (padded) neighbour search is exact for {', '.join(PADDING_EXACT)} only; {name} "
            "has pair terms without the cutoff or neighbour counts (run it eagerly)"
        )
    pair_priors = [type(p).__name__ for p in priors if type(p).__name__ in PAIR_PRIORS]
    if pair_priors:
        return f"the priors {pair_priors} search neighbours with dynamic shapes (run the model eagerly)"
    return None
