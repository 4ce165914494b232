"""The directed edges of a half list grouped by receiver, as an [N, K] padded (ELL) layout.

Row n holds the edges into atom n, in slots 0 .. its in-degree, K the largest in-degree; the
rest of the row is padding. Per-atom sums over a row are then batched matrix products
(``bmm`` over atoms) instead of per-edge scatters. K is data-dependent; a traced model takes
:func:`edge_rows` instead (one edge a row, summed by a scatter).
"""

from typing import NamedTuple

import torch
from torch import Tensor


class ReceiverSlots(NamedTuple):
    """For each slot [N, K] of the layout: ``pair`` the half-list pair of its edge (0 in
    padding), ``sender`` the atom at the edge's other end, and ``sign`` +1 for a pair's
    ``first`` <- ``second`` edge, -1 for ``second`` <- ``first`` (the pair vector flips), 0 in
    padding."""

    pair: Tensor
    sender: Tensor
    sign: Tensor


def receiver_slots(first: Tensor, second: Tensor, n_atoms: int, dtype: torch.dtype) -> ReceiverSlots:
    """The layout of the 2 P directed edges of the pairs (``first``, ``second``) [P] over
    ``n_atoms`` receivers; ``sign`` in ``dtype``. Edges keep their half-list order in a row."""
    n_pairs = first.shape[0]
    receiver = torch.cat((first, second))
    counts = torch.bincount(receiver, minlength=n_atoms)
    width = int(counts.max()) if n_pairs else 0
    order = torch.argsort(receiver, stable=True)
    sorted_receiver = receiver[order]
    row_start = torch.cumsum(counts, 0) - counts
    slot = sorted_receiver * width + torch.arange(2 * n_pairs, device=first.device) - row_start[sorted_receiver]
    edge = first.new_zeros(n_atoms * width).index_put_((slot,), order)
    sign = torch.zeros(n_atoms * width, dtype=dtype, device=first.device).index_put_(
        (slot,), torch.where(order < n_pairs, 1.0, -1.0).to(dtype)
    )
    pair = torch.where(edge < n_pairs, edge, edge - n_pairs)
    sender = torch.cat((second, first))[edge]
    return ReceiverSlots(*(t.view(n_atoms, width) for t in (pair, sender, sign)))


def edge_rows(first: Tensor, second: Tensor, dtype: torch.dtype) -> tuple[ReceiverSlots, Tensor]:
    """Each of the 2 P directed edges as its own row of width 1 (a layout whose shape depends
    on P alone, for traced models), and the receiver of each row [2 P]."""
    pair = torch.arange(first.shape[0], device=first.device).repeat(2)
    sign = torch.ones(2 * first.shape[0], dtype=dtype, device=first.device)
    sign[first.shape[0] :] = -1.0
    slots = ReceiverSlots(pair[:, None], torch.cat((second, first))[:, None], sign[:, None])
    return slots, torch.cat((first, second))
