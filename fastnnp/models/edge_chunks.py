"""Per-edge work in bounded memory: edges grouped by receiving atom, processed in chunks.

Edges must be sorted by receiver. Each chunk covers a contiguous range of receiving atoms,
so its messages sum into its own slice of the per-atom output and no per-edge tensor of the
whole graph (E x F x 9, or even E x F) is ever alive at once. When autograd is recording and
there is more than one chunk, each chunk is checkpointed: its per-edge intermediates are
recomputed in backward instead of stored (double backward still works, for force training).
"""

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

DEFAULT_EDGES_PER_CHUNK = 16384


class EdgeChunk(NamedTuple):
    """Receiving atoms [atom_start, atom_end) and their edges [edge_start, edge_end)."""

    atom_start: int
    atom_end: int
    edge_start: int
    edge_end: int


def edge_chunks(receivers: Tensor, n_atoms: int, max_edges: int = DEFAULT_EDGES_PER_CHUNK) -> list[EdgeChunk]:
    """Split edges sorted by ``receivers`` [E] into atom-aligned chunks of about ``max_edges``.

    An atom with more than ``max_edges`` edges gets a chunk of its own.
    """
    counts = torch.bincount(receivers, minlength=n_atoms)
    row_end = torch.cumsum(counts, 0).tolist()
    n_edges = row_end[-1] if n_atoms else 0
    if n_edges <= max_edges:
        return [EdgeChunk(0, n_atoms, 0, n_edges)]
    ends = torch.tensor(row_end)
    targets = torch.arange(max_edges, n_edges, max_edges)
    cut_atoms = torch.searchsorted(ends, targets, right=True).tolist()
    bounds = sorted({0, n_atoms, *[min(a, n_atoms) for a in cut_atoms]})
    chunks = []
    for a0, a1 in zip(bounds[:-1], bounds[1:]):
        e0 = row_end[a0 - 1] if a0 > 0 else 0
        chunks.append(EdgeChunk(a0, a1, e0, row_end[a1 - 1]))
    return chunks


def sum_edge_messages(
    message_fn: Callable[..., tuple[Tensor, ...]],
    chunks: Sequence[EdgeChunk],
    edge_args: Sequence[Tensor],
    atom_args: Sequence[Tensor],
) -> tuple[Tensor, ...]:
    """Per-atom sums of messages, computed chunk by chunk.

    ``message_fn(atom_start, atom_end, *edge_slices, *atom_args)`` must return a tuple of
    tensors whose first dimension is ``atom_end - atom_start`` (the chunk's atoms).
    ``edge_args`` are per-edge tensors (sliced per chunk), ``atom_args`` per-atom tensors
    passed whole. Returns the chunks' outputs concatenated over atoms.
    """
    recompute = torch.is_grad_enabled() and len(chunks) > 1
    parts = []
    for chunk in chunks:
        sliced = [t[chunk.edge_start : chunk.edge_end] for t in edge_args]
        if recompute:
            out = checkpoint(
                message_fn, chunk.atom_start, chunk.atom_end, *sliced, *atom_args, use_reentrant=False
            )
        else:
            out = message_fn(chunk.atom_start, chunk.atom_end, *sliced, *atom_args)
        parts.append(out)
    if len(parts) == 1:
        return tuple(parts[0])
    return tuple(torch.cat(p, dim=0) for p in zip(*parts))
