"""Edge vectors and lengths of a neighbour list, and the exact cutoff test on them.

Conventions as in :mod:`fastnnp.neighbors.cell_list`: the edge (i, j, image) has the vector
``pos[i] - pos[j] - image @ box[system of i]`` and the length ``|vector|``. Every search that
returns a :class:`~fastnnp.neighbors.cell_list.NeighborList` computes them with these
functions, so lengths agree bit for bit between searches.
"""

from typing import Optional

import torch
from torch import Tensor


def edge_vectors(pos: Tensor, box: Optional[Tensor], batch: Tensor, i: Tensor, j: Tensor, image: Tensor) -> Tensor:
    """[E, 3] ``pos[i] - pos[j] - image @ box[system]`` for pos [N, 3], box None, (3, 3) or
    (S, 3, 3) in pos's dtype, batch [N], i, j [E], image [E, 3] int64. The lattice term,
    n0 * a + n1 * b + n2 * c, is only evaluated for the edges with a non-zero image; every
    operation is elementwise and sign-symmetric, so the edges (i, j, n) and (j, i, -n) get
    exactly opposite vectors. Differentiable in ``pos`` and ``box``."""
    vec = pos.index_select(0, i) - pos.index_select(0, j)
    if box is None:
        return vec
    nz = (image != 0).any(dim=1).nonzero().squeeze(1)
    if nz.numel() == 0:
        return vec
    # Few periodic edges (large cells): translate only those; many (small cells): all edges.
    # Both give the same values (x - s == x + (-1) * s, and x - 0 == x).
    dense = 3 * nz.numel() > image.shape[0]
    img = (image if dense else image.index_select(0, nz)).to(box.dtype)
    if box.dim() == 2:
        a, b, c = box[0], box[1], box[2]
    else:
        sys_e = batch.index_select(0, i if dense else i.index_select(0, nz))
        a = box[:, 0].index_select(0, sys_e)
        b = box[:, 1].index_select(0, sys_e)
        c = box[:, 2].index_select(0, sys_e)
    shift = img[:, 0:1] * a + img[:, 1:2] * b + img[:, 2:3] * c
    return vec - shift if dense else vec.index_add(0, nz, shift, alpha=-1)


def safe_norm(vec: Tensor) -> Tensor:
    """[E] ``|vec|`` of vec [E, 3], with a zero (not NaN) gradient at vec = 0."""
    sq = (vec * vec).sum(1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def within_cutoffs(
    pos: Tensor,
    box: Optional[Tensor],
    batch: Tensor,
    i: Tensor,
    j: Tensor,
    image: Tensor,
    cutoff_lower: float,
    cutoff_upper: float,
) -> Tensor:
    """[E] bool: ``cutoff_lower <= length < cutoff_upper`` for the edges (i, j, image), tested
    on the very lengths :func:`edge_vectors` and :func:`safe_norm` return (arguments as for
    :func:`edge_vectors`). This is the exact cutoff of every returned neighbour list."""
    d = safe_norm(edge_vectors(pos, box, batch, i, j, image))
    return (d >= cutoff_lower) & (d < cutoff_upper)
