"""Atom-local work in cache-sized chunks of atoms, recomputed in backward for large systems.

Everything a TensorNet layer does between two message passes acts on each atom alone, so it
can run on slices of atoms: small slices stay in cache, and for systems whose per-atom
intermediates would exceed the memory budget each slice is checkpointed, leaving only the
inputs and outputs of the step alive (a few [N, 3, 3, F] tensors instead of tens).
"""

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ATOM_CHUNK = 2048


def map_atoms(
    fn: Callable[..., tuple[Tensor, ...]],
    per_atom: Sequence[Tensor],
    recompute: bool,
    chunk: Optional[int] = None,
) -> tuple[Tensor, ...]:
    """``fn(*slices)`` on consecutive slices of the per-atom tensors ``per_atom`` (all [N, ...]);
    returns its outputs concatenated over atoms. ``fn`` must act on each atom independently."""
    chunk = chunk or ATOM_CHUNK
    n_atoms = per_atom[0].shape[0]
    if n_atoms <= chunk:
        return fn(*per_atom)
    parts = []
    # one split per tensor: its backward joins the slices' gradients once
    for sliced in zip(*(t.split(chunk) for t in per_atom)):
        parts.append(checkpoint(fn, *sliced, use_reentrant=False) if recompute else fn(*sliced))
    return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))


def atoms_need_recompute(n_atoms: int, floats_per_atom: int, budget_bytes: int) -> bool:
    """Whether ``floats_per_atom`` 4-byte values per atom kept for backward exceed the budget."""
    return torch.is_grad_enabled() and n_atoms * floats_per_atom * 4 > budget_bytes
