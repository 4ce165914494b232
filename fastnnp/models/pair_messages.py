"""Per-pair work in bounded memory, each unordered pair computed once for both directions.

A model's per-edge filter usually depends only on the pair distance, which is the same for
i <- j and j <- i; computing it on the half list halves the dominant cost (the radial MLP).
Pairs are processed in chunks small enough to stay in cache; each chunk's messages are summed
into per-atom outputs at once, so no per-edge x component tensor of the whole graph
(E x F x 9) is ever alive. When even the per-pair values autograd keeps would exceed a memory
budget, each chunk is checkpointed: its intermediates are recomputed in backward instead of
stored (double backward still works, for force training).
"""

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..neighbors import NeighborList

# Bytes of per-pair intermediates kept for backward before chunks switch to recomputation.
DEFAULT_CHUNK_BYTES = 2**30


class HalfList(NamedTuple):
    """Each unordered pair once: ``first`` <- ``second`` with ``vec = pos[first] - pos[second]
    - image @ box`` [P, 3] and ``distance`` [P]. Self loops (zero length) are not included."""

    first: Tensor
    second: Tensor
    vec: Tensor
    distance: Tensor


def half_list(graph: NeighborList) -> HalfList:
    """Keep one direction of every pair of a full neighbour list (i < j, or i == j with a
    lexicographically positive image), dropping zero-length self loops."""
    i, j = graph.edge_index
    image = graph.image
    positive_image = (image[:, 0] > 0) | (
        (image[:, 0] == 0) & ((image[:, 1] > 0) | ((image[:, 1] == 0) & (image[:, 2] > 0)))
    )
    keep = (i < j) | ((i == j) & positive_image)
    return HalfList(i[keep], j[keep], graph.edge_vec[keep], graph.edge_weight[keep])


def needs_recompute(n_pairs: int, floats_per_pair: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> bool:
    """Whether storing ``floats_per_pair`` 4-byte values per pair for backward exceeds the budget."""
    return torch.is_grad_enabled() and n_pairs * floats_per_pair * 4 > budget_bytes


def accumulate_pair_messages(
    message_fn: Callable[..., tuple[Tensor, ...]],
    pairs: HalfList,
    pair_args: Sequence[Tensor],
    atom_args: Sequence[Tensor],
    outputs: Sequence[Tensor],
    chunk_size: int,
    recompute: bool,
) -> None:
    """Add every pair's messages into ``outputs`` (per-atom tensors [N, ...], in place).

    ``message_fn(first, second, *pair_slices, *atom_args)`` gets one chunk of pairs and
    returns ``2 * len(outputs)`` tensors of ``chunk`` rows: the messages to ``first`` for each
    output, then those to ``second``. ``pair_args`` are per-pair tensors, sliced per chunk.
    With ``recompute`` each chunk is checkpointed (its intermediates recomputed in backward).
    """
    n_pairs = pairs.first.shape[0]
    for start in range(0, n_pairs, chunk_size):
        stop = start + chunk_size
        first, second = pairs.first[start:stop], pairs.second[start:stop]
        sliced = [t[start:stop] for t in pair_args]
        if recompute:
            messages = checkpoint(message_fn, first, second, *sliced, *atom_args, use_reentrant=False)
        else:
            messages = message_fn(first, second, *sliced, *atom_args)
        n_out = len(outputs)
        for targets, chunk_messages in ((first, messages[:n_out]), (second, messages[n_out:])):
            for out, message in zip(outputs, chunk_messages):
                out.index_add_(0, targets, message)
