"""Per-pair work in bounded memory, each unordered pair computed once for both directions.

A model's per-edge filter usually depends only on the pair distance, which is the same for
i <- j and j <- i; computing it on the half list halves the dominant cost (the radial MLP).
Pairs are processed in chunks small enough to stay in cache; each chunk's messages are summed
into per-atom outputs at once, so no per-edge x component tensor of the whole graph
(E x F x 9) is ever alive. When even the per-pair values autograd keeps would exceed a memory
budget, each chunk is checkpointed: its intermediates are recomputed in backward instead of
stored (double backward still works, for force training).
"""

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


# Bytes of per-pair intermediates kept for backward before chunks switch to recomputation.
DEFAULT_CHUNK_BYTES = 2**30


class HalfList(NamedTuple):
    """Each unordered pair once: ``first`` <- ``second`` with ``vec = pos[first] - pos[second]
    - image @ box`` [P, 3] and ``distance`` [P] (a ``neighbor_list(..., half=True)``). Self
    loops (zero length) are not included."""

    first: Tensor
    second: Tensor
    vec: Tensor
    distance: Tensor


def recompute_segment(n_pairs: int, floats_per_pair: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> Optional[int]:
    """Pairs per recomputed segment when storing ``floats_per_pair`` 4-byte values per pair
    for backward would exceed ``budget_bytes``; None when everything can be stored."""
    if not torch.is_grad_enabled() or n_pairs * floats_per_pair * 4 <= budget_bytes:
        return None
    return max(1, budget_bytes // (4 * floats_per_pair))


def sum_pair_messages(
    message_fn: Callable[..., tuple[Tensor, ...]],
    pairs: HalfList,
    pair_args: Sequence[Tensor],
    atom_args: Sequence[Tensor],
    initial: Sequence[Tensor],
    chunk_size: int,
    segment_size: Optional[int] = None,
) -> list[Tensor]:
    """``initial`` (per-atom tensors [N, ...]) plus every pair's messages.

    ``message_fn(first, second, *pair_slices, *atom_args)`` gets one chunk of at most
    ``chunk_size`` pairs and returns ``2 * len(initial)`` tensors of ``chunk`` rows: the
    messages to ``first`` for each output, then those to ``second``. ``pair_args`` are per-pair
    tensors, sliced per chunk. With ``segment_size``, the pairs are processed in segments of
    that many pairs, each checkpointed (its intermediates recomputed in backward); without,
    autograd keeps every chunk's intermediates and ``initial`` is updated in place.
    """
    n_out = len(initial)

    def add_messages(outputs, first, second, *args):
        # one split per pair tensor: its backward joins the chunks' gradients once (a slice
        # per chunk would fill a zero gradient of the whole tensor per chunk)
        chunks = zip(first.split(chunk_size), second.split(chunk_size), *(t.split(chunk_size) for t in args[: len(pair_args)]))
        for i, j, *sliced in chunks:
            messages = message_fn(i, j, *sliced, *args[len(pair_args) :])
            for targets, chunk_messages in ((i, messages[:n_out]), (j, messages[n_out:])):
                for out, message in zip(outputs, chunk_messages, strict=True):
                    out.index_add_(0, targets, message)
        return tuple(outputs)

    def segment(first, second, *args):
        return add_messages([torch.zeros_like(t) for t in initial], first, second, *args)

    if segment_size is None:
        return list(add_messages(list(initial), pairs.first, pairs.second, *pair_args, *atom_args))
    return add_checkpointed_segments(segment, pairs, pair_args, atom_args, initial, segment_size)


def add_checkpointed_segments(
    segment_fn: Callable[..., tuple[Tensor, ...]],
    pairs: HalfList,
    pair_args: Sequence[Tensor],
    atom_args: Sequence[Tensor],
    initial: Sequence[Tensor],
    segment_size: int,
) -> list[Tensor]:
    """``initial`` plus ``segment_fn(first, second, *pair_slices, *atom_args)`` (per-atom sums
    over those pairs) for consecutive segments of ``segment_size`` pairs, each checkpointed."""
    totals = list(initial)
    pieces = (t.split(segment_size) for t in (pairs.first, pairs.second, *pair_args))
    for first, second, *sliced in zip(*pieces):
        sums = checkpoint(segment_fn, first, second, *sliced, *atom_args, use_reentrant=False)
        totals = [total + s for total, s in zip(totals, sums, strict=True)]
    return totals
