"""Build a :class:`NeuralPotential` from TorchMD-Net hyper-parameters (``torchmd-train`` args)."""

from typing import Optional

import torch
from torch import Tensor

from ..priors import build_priors
from .output_modules import infer_num_hidden_layers, output_model_class
from .potential import NeuralPotential

SUPPORTED_MODELS = ("tensornet", "equivariant-transformer", "graph-network")
_UNSUPPORTED = {
    "transformer": "the deprecated TorchMD-T transformer",
    "tensornet2": "TensorNet2",
    "tensornetv2_alt": "TensorNet2",
    "tensornet-nqe": "TensorNet2",
}
_PRECISIONS = {32: torch.float32, 64: torch.float64}
BACKENDS = ("torch", "triton")
_COMMON_KEYS = (
    "model", "embedding_dimension", "num_layers", "num_rbf", "rbf_type", "activation",
    "cutoff_lower", "cutoff_upper", "max_z", "output_model",
)
_MODEL_KEYS = {
    "tensornet": ("equivariance_invariance_group",),
    "equivariant-transformer": ("num_heads", "distance_influence", "attn_activation", "neighbor_embedding"),
    "graph-network": ("aggr", "neighbor_embedding"),
}


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
    ``backend`` "triton" runs TensorNet's neighbour search and edge work on Triton kernels
    (float32, frozen parameters); "torch" is the reference.
    """
    name = hparams.get("model")
    if name in _UNSUPPORTED:
        raise ValueError(f"model {name!r} ({_UNSUPPORTED[name]}) is not supported; supported: {', '.join(SUPPORTED_MODELS)}")
    if name not in SUPPORTED_MODELS:
        raise ValueError(f"unknown model {name!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    missing = [k for k in _COMMON_KEYS + _MODEL_KEYS[name] if k not in hparams]
    if missing:
        raise ValueError(f"hyper-parameters lack {', '.join(missing)} needed to build model {name!r}")
    if (hparams.get("atom_filter") or -1) > -1:
        raise ValueError("atom_filter is not supported: fastnnp evaluates every atom")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or 'auto' in load_model)")
    if backend == "triton" and name != "tensornet":
        raise ValueError(f"backend='triton' has kernels for TensorNet only, not {name!r}; use backend='torch'")
    dtype = model_dtype(hparams)
    representation = _representation(name, hparams, dtype, backend)
    if state_dict_keys is not None:
        hidden_layers = infer_num_hidden_layers(state_dict_keys)
    else:
        hidden_layers = int(hparams.get("output_mlp_num_layers", 0) or 0)
    head = output_model_class(hparams["output_model"], equivariant=name == "equivariant-transformer")(
        hparams["embedding_dimension"],
        activation=hparams["activation"],
        reduce_op=hparams.get("reduce_op", "add"),
        dtype=dtype,
        num_hidden_layers=hidden_layers,
    )
    priors = build_priors(hparams) if head.allow_prior_model else []
    model = NeuralPotential(
        representation, head, [p.to(dtype) for p in priors], derivative=derivative,
        max_z=int(hparams["max_z"]), dtype=dtype,
        default_box=None if default_box is None else default_box.to(dtype),
    )
    return model.to(dtype)


def _representation(name: str, hp: dict, dtype: torch.dtype, backend: str) -> torch.nn.Module:
    shared = dict(
        hidden_channels=hp["embedding_dimension"],
        num_layers=hp["num_layers"],
        num_rbf=hp["num_rbf"],
        rbf_type=hp["rbf_type"],
        trainable_rbf=hp.get("trainable_rbf", False),
        activation=hp["activation"],
        cutoff_lower=float(hp["cutoff_lower"]),
        cutoff_upper=float(hp["cutoff_upper"]),
        max_z=hp["max_z"],
        dtype=dtype,
    )
    if name == "tensornet":
        if backend == "triton":
            from .tensornet.triton import TritonTensorNet as TensorNet
        else:
            from .tensornet.reference import TensorNet

        return TensorNet(equivariance_invariance_group=hp["equivariance_invariance_group"], **shared)
    if name == "equivariant-transformer":
        from .et import EquivariantTransformer

        return EquivariantTransformer(
            attn_activation=hp["attn_activation"],
            neighbor_embedding=hp["neighbor_embedding"],
            num_heads=hp["num_heads"],
            distance_influence=hp["distance_influence"],
            vector_cutoff=hp.get("vector_cutoff", False),
            **shared,
        )
    from .gn import GraphNetwork

    return GraphNetwork(
        num_filters=hp["embedding_dimension"], aggr=hp["aggr"], neighbor_embedding=hp["neighbor_embedding"], **shared
    )
