"""Build a :class:`NeuralPotential` from TorchMD-Net hyper-parameters (``torchmd-train`` args)."""

from typing import Optional

import torch
from torch import Tensor

from ..priors import build_priors
from . import registry
from .output_modules import head_arguments, infer_num_hidden_layers, output_model_class
from .potential import NeuralPotential

_PRECISIONS = {32: torch.float32, 64: torch.float64}


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
) -> NeuralPotential:
    """A randomly initialised potential with the architecture ``hparams`` describe.

    ``state_dict_keys`` (of the checkpoint to be loaded) fix the output head's MLP depth,
    which TorchMD-Net's own ``output_mlp_num_layers`` does not reliably describe.
    ``hparams["model"]`` may be an alias (:data:`fastnnp.models.registry.ALIASES`).
    ``backend`` "triton" runs TensorNet's neighbour search and edge work on Triton kernels
    (float32, frozen parameters); "torch" is the reference.
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
    model = NeuralPotential(
        representation, head, [p.to(dtype) for p in priors], derivative=derivative,
        max_z=int(hparams["max_z"]), dtype=dtype,
        default_box=None if default_box is None else default_box.to(dtype),
    )
    return model.to(dtype)
