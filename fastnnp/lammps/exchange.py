"""Per-layer ghost exchange: LAMMPS's KOKKOS coupling fills ghost atoms' features between layers.

The KOKKOS ML-IAP coupling (LAMMPS 2025 and later) offers ``data.forward_exchange(src, dst,
width)``: ``dst = src`` on all ``ntotal`` rows, then every ghost row overwritten with its owner's
row (from this or another MPI rank), and ``data.reverse_exchange(src, dst, width)``: ``dst = src``,
every ghost row added into its owner's row, ghost rows zeroed. Both are collective: every rank
makes the same calls in the same order.

With them a domain needs one cutoff of ghosts and no ghost neighbour lists: each message-passing
module (:func:`message_modules`) computes new features for every atom, right only for the owned
ones, and its output passes through :class:`GhostExchange`, which fills the ghost rows from their
owners; its backward sends the ghosts' gradients home, so each rank's per-pair forces are
derivatives of the energy of all ranks.
"""

from contextlib import contextmanager
from typing import Any, Iterator, Union

import torch
from torch import Tensor, nn

Output = Union[Tensor, tuple]


class GhostExchange(torch.autograd.Function):
    """``features`` [ntotal, ...] with ghost rows taken from their owners (``comm.forward_exchange``);
    backward: ``comm.reverse_exchange``. ``anchor`` (0-d, requires grad) keeps the exchange in the
    graph whatever ``features`` depends on, so every rank runs the same reverse exchanges."""

    @staticmethod
    def forward(ctx, features: Tensor, anchor: Tensor, comm: Any) -> Tensor:
        ctx.comm = comm
        features = features.contiguous()
        exchanged = torch.empty_like(features)
        comm.forward_exchange(features, exchanged, features[0].numel() if features.shape[0] else 0)
        return exchanged

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        summed = torch.empty_like(grad)
        ctx.comm.reverse_exchange(grad, summed, grad[0].numel() if grad.shape[0] else 0)
        return summed, torch.zeros((), dtype=grad.dtype, device=grad.device), None


def _embedding_and(layers: str):
    """The neighbour embedding (where present) and ``layers`` of an ET / GN representation."""
    return lambda r: [*([] if r.neighbor_embedding is None else [r.neighbor_embedding]), *getattr(r, layers)]


# representation class name -> its message-passing modules in call order
MESSAGE_MODULES = {
    "TensorNet": lambda r: [r.tensor_embedding, *r.layers],
    "EquivariantTransformer": _embedding_and("attention_layers"),
    "GraphNetwork": _embedding_and("interactions"),
}


def message_modules(representation: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are per-atom features built from neighbours, in call order
    (:data:`MESSAGE_MODULES`). Their number is the model's message-passing hops. ValueError for
    other models."""
    name = type(representation).__name__
    if name not in MESSAGE_MODULES:
        raise ValueError(
            f"{name} cannot run on LAMMPS pair lists; supported: {', '.join(MESSAGE_MODULES)} (torch backend)"
        )
    return MESSAGE_MODULES[name](representation)


@contextmanager
def exchanged_outputs(representation: nn.Module, comm: Any, anchor: Tensor, n_atoms: int) -> Iterator[None]:
    """While open, every output tensor of :func:`message_modules` passes through :class:`GhostExchange`."""

    def exchange(module: nn.Module, inputs: tuple, output: Output) -> Output:
        tensors = output if isinstance(output, tuple) else (output,)
        for tensor in tensors:
            if tensor.shape[0] != n_atoms:
                raise RuntimeError(f"{type(module).__name__} gave {tensor.shape[0]} rows for {n_atoms} atoms")
        exchanged = tuple(GhostExchange.apply(tensor, anchor, comm) for tensor in tensors)
        return exchanged if isinstance(output, tuple) else exchanged[0]

    handles = [module.register_forward_hook(exchange) for module in message_modules(representation)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
