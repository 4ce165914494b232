"""Which class runs an architecture on a backend, and why a backend cannot serve a checkpoint.

One table, asked by :func:`fastnnp.load_model` (``backend="auto"`` and refusals),
:func:`fastnnp.models.factory.build_model` and ``python -m fastnnp.bench``. An architecture
(TorchMD-Net's ``hparams["model"]``) lists the hyper-parameters it needs, how they become
constructor arguments, and one implementation per backend: ``"torch"`` (the reference, every
architecture) and ``"triton"`` (fused kernels, where they exist). Classes are named as
``"module:Class"`` and imported on use, so the table needs neither Triton nor the models.

Adding Triton kernels for an architecture is one ``"triton"`` entry here, plus its folders
``fastnnp/kernels/<architecture>/`` and ``fastnnp/models/<architecture>/triton.py``.
"""

import importlib
import importlib.util
from typing import Callable, NamedTuple, Optional

import torch

from ..kernels.common.interpreter import interpreting
from .common.activations import ACTIVATIONS, no_kernel_reason

BACKENDS = ("torch", "triton")
# Hyper-parameters every architecture needs.
COMMON_KEYS = (
    "model", "embedding_dimension", "num_layers", "num_rbf", "rbf_type", "activation",
    "cutoff_lower", "cutoff_upper", "max_z", "output_model",
)
# TorchMD-Net models fastnnp does not implement.
UNSUPPORTED = {
    "transformer": "the deprecated TorchMD-T transformer",
}
# Other names checkpoints use for an architecture (TorchMD-Net's load_model renames them; the
# released aceff-2.0.ckpt says "tensornetv2_alt").
ALIASES = {"tensornetv2_alt": "tensornet2", "tensornet-nqe": "tensornet2"}


class Implementation(NamedTuple):
    """A representation class (``"module:Class"``) and a check saying why it cannot serve a
    checkpoint: ``limits(hparams, dtype, device, interpreting) -> reason or None``; a None
    dtype or device is not checked."""

    path: str
    limits: Optional[Callable[[dict, Optional[torch.dtype], Optional[str], bool], Optional[str]]] = None


class Architecture(NamedTuple):
    """How to build one architecture from TorchMD-Net hyper-parameters."""

    title: str  # for messages
    keys: tuple[str, ...]  # hyper-parameters needed beyond COMMON_KEYS
    arguments: Callable[[dict], dict]  # hparams -> constructor arguments beyond the shared ones
    implementations: dict[str, Implementation]  # backend -> implementation
    equivariant_head: bool = False  # the output head gets vector features too


def triton_limits(hparams: dict, dtype: Optional[torch.dtype], device: Optional[str], interpret: bool) -> Optional[str]:
    """Why the Triton kernels cannot run this checkpoint in ``dtype`` on ``device`` (a device
    type such as "cuda"), or None: they need Triton, float32, CUDA (CPU: the interpreter) and
    a kernel for the activation."""
    if importlib.util.find_spec("triton") is None:
        return "needs Triton (pip install triton), which is not installed"
    if dtype is not None and dtype != torch.float32:
        return (
            f"backend='triton' runs float32 only; this model would run in {dtype}: pass dtype=torch.float32 "
            "or use backend='torch'"
        )
    if device is not None and device != "cuda" and not (device == "cpu" and interpret):
        return (
            f"needs CUDA: backend='triton' needs a CUDA device, got {device}; set TRITON_INTERPRET=1 before "
            "importing fastnnp to run the kernels on CPU (slowly), or use backend='torch'"
        )
    activation = ACTIVATIONS.get(hparams.get("activation", "silu"))
    if activation is not None and activation.kernel_code is None:
        return no_kernel_reason(activation.module)
    return None


def shared_arguments(hp: dict) -> dict:
    """Constructor arguments every representation takes, from TorchMD-Net hyper-parameters."""
    return dict(
        hidden_channels=hp["embedding_dimension"],
        num_layers=hp["num_layers"],
        num_rbf=hp["num_rbf"],
        rbf_type=hp["rbf_type"],
        trainable_rbf=hp.get("trainable_rbf", False),
        activation=hp["activation"],
        cutoff_lower=float(hp["cutoff_lower"]),
        cutoff_upper=float(hp["cutoff_upper"]),
        max_z=hp["max_z"],
    )


ARCHITECTURES: dict[str, Architecture] = {
    "tensornet": Architecture(
        "TensorNet",
        ("equivariance_invariance_group",),
        lambda hp: dict(equivariance_invariance_group=hp["equivariance_invariance_group"]),
        {
            "torch": Implementation("fastnnp.models.tensornet.reference:TensorNet"),
            "triton": Implementation("fastnnp.models.tensornet.triton:TritonTensorNet", triton_limits),
        },
    ),
    "equivariant-transformer": Architecture(
        "the Equivariant Transformer",
        ("num_heads", "distance_influence", "attn_activation", "neighbor_embedding"),
        lambda hp: dict(
            attn_activation=hp["attn_activation"], neighbor_embedding=hp["neighbor_embedding"],
            num_heads=hp["num_heads"], distance_influence=hp["distance_influence"],
            vector_cutoff=hp.get("vector_cutoff", False),
        ),
        {
            "torch": Implementation("fastnnp.models.et.reference:EquivariantTransformer"),
            "triton": Implementation("fastnnp.models.et.triton:TritonEquivariantTransformer", triton_limits),
        },
        equivariant_head=True,
    ),
    "graph-network": Architecture(
        "the Graph Network",
        ("aggr", "neighbor_embedding"),
        lambda hp: dict(num_filters=hp["embedding_dimension"], aggr=hp["aggr"], neighbor_embedding=hp["neighbor_embedding"]),
        {
            "torch": Implementation("fastnnp.models.gn.reference:GraphNetwork"),
            "triton": Implementation("fastnnp.models.gn.triton:TritonGraphNetwork", triton_limits),
        },
    ),
    "tensornet2": Architecture(
        "TensorNet2",
        ("equivariance_invariance_group",),
        lambda hp: dict(
            equivariance_invariance_group=hp["equivariance_invariance_group"],
            q_dim=int(hp.get("q_dim", 0) or 0),
            output_charges="Coul" in hp["output_model"],
            repulsion=bool(hp.get("repulsion", False)),
        ),
        {
            "torch": Implementation("fastnnp.models.tensornet2.reference:TensorNet2"),
            "triton": Implementation("fastnnp.models.tensornet2.triton:TritonTensorNet2", triton_limits),
        },
    ),
}


def canonical_name(name: str) -> str:
    """``hparams["model"]`` with an alias (:data:`ALIASES`) replaced by the architecture's name."""
    return ALIASES.get(name, name)


def architecture(name: str) -> Architecture:
    """The entry for ``hparams["model"]`` (or an alias); ValueError for unsupported and unknown models."""
    supported = ", ".join(ARCHITECTURES)
    name = canonical_name(name)
    if name in UNSUPPORTED:
        raise ValueError(f"model {name!r} ({UNSUPPORTED[name]}) is not supported; supported: {supported}")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; supported: {supported}")
    return ARCHITECTURES[name]


def unsupported(
    name: str,
    backend: str,
    hparams: dict,
    dtype: Optional[torch.dtype] = None,
    device: Optional[str] = None,
    interpret: Optional[bool] = None,
) -> Optional[str]:
    """Why ``backend`` cannot serve a ``name`` checkpoint with ``hparams`` in ``dtype`` on
    ``device`` (a device type; None: not checked), or None when it can. ``interpret``: whether
    Triton's CPU interpreter is on (default: this process's ``TRITON_INTERPRET``)."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or 'auto' in load_model)"
    entry = architecture(name)
    implementation = entry.implementations.get(backend)
    if implementation is None:
        having = [a.title for a in ARCHITECTURES.values() if backend in a.implementations]
        return f"backend={backend!r} has kernels for {', '.join(having)} only, not {name!r}; use backend='torch'"
    if implementation.limits is None:
        return None
    return implementation.limits(hparams, dtype, device, interpreting() if interpret is None else interpret)


def representation_class(name: str, backend: str) -> type[torch.nn.Module]:
    """The class implementing architecture ``name`` on ``backend`` (imported here)."""
    module, cls = architecture(name).implementations[backend].path.split(":")
    return getattr(importlib.import_module(module), cls)


def choose_backend(backend: str, hparams: dict, dtype: torch.dtype, device: torch.device) -> str:
    """Resolve ``backend`` ("auto" | "triton" | "torch"): "auto" is Triton on a CUDA device when
    it can serve the checkpoint, else the reference; an explicit backend that cannot is refused
    with the registry's reason (ValueError)."""
    if backend == "auto":
        fits = device.type == "cuda" and unsupported(hparams.get("model"), "triton", hparams, dtype, device.type) is None
        return "triton" if fits else "torch"
    reason = unsupported(hparams.get("model"), backend, hparams, dtype, device.type)
    if reason is not None:
        raise ValueError(reason)
    return backend
