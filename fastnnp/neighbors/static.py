"""A neighbour search of static shape: every candidate pair of a fixed-size input, padded.

:func:`padded_neighbor_list` takes :func:`~fastnnp.neighbors.neighbor_list`'s arguments and
returns a :class:`~fastnnp.neighbors.NeighborList` whose length depends on the shapes only
(TorchMD-Net's ``static_shapes``: pairs padded up to a fixed count), so that ``torch.compile``
(``fullgraph=True``) and ``torch.export`` can trace it: no host read, no data-dependent shape.

* Candidates: every pair i < j of the N atoms (``torch.triu_indices``), with a box for each of
  the 27 lattice images n in {-1, 0, 1}^3 of the sender (positions wrapped into the cell, so
  the image returned is ``n + shift_i - shift_j`` for the positions as given), plus the 13
  positive images of each atom itself; ``half=False`` adds the mirrored pairs, ``loop`` one
  self loop per atom (length 0, kept as in :func:`~fastnnp.neighbors.neighbor_list`).
* Pairs of different systems and pairs outside ``cutoff_lower <= d < cutoff_upper`` are
  **padding**: their vector is the constant (2 cutoff_upper, 0, 0) (no gradient), their length
  2 cutoff_upper. Lengths of real pairs are computed exactly as
  :func:`~fastnnp.neighbors.edges.edge_vectors` computes them (bit for bit).
* Padding is exact for models whose every pair term carries the cosine cutoff (zero at and
  beyond ``cutoff_upper``): TensorNet. It is not for models with pair terms that do not
  (ET's vector messages) or that count neighbours (GN's mean).
* The 27 images cover every pair when each cell height is at least ``cutoff_upper``
  (:func:`check_cells`); an atom's own images are then never within the cutoff.

Memory is O(27 N^2): for small fixed-size inputs (compiled or exported models); the normal path
(:func:`~fastnnp.neighbors.neighbor_list`) stays O(N).
"""

from typing import Optional, Sequence

import torch
from torch import Tensor

from .cell_list import NeighborList, neighbor_list
from .cells import cell_geometry
from .edges import safe_norm

# Lattice images of the sender searched with a box: all of {-1, 0, 1}^3, n = 0 first.
_IMAGES = torch.tensor([[a, b, c] for a in (0, -1, 1) for b in (0, -1, 1) for c in (0, -1, 1)])
# An atom's own images: the 13 lexicographically positive ones of {-1, 0, 1}^3.
_OWN_IMAGES = torch.tensor([n.tolist() for n in _IMAGES if tuple(n.tolist()) > (0, 0, 0)])


def tracing() -> bool:
    """Whether ``torch.compile`` (Dynamo) or ``torch.export`` is tracing."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def traceable_neighbor_list(
    pos: Tensor,
    batch: Tensor,
    cutoff_upper: float,
    cutoff_lower: float = 0.0,
    box: Optional[Tensor] = None,
    loop: bool = False,
    pbc: Optional[Sequence[bool]] = None,
    half: bool = False,
) -> NeighborList:
    """:func:`~fastnnp.neighbors.neighbor_list` when run eagerly, :func:`padded_neighbor_list`
    while ``torch.compile`` or ``torch.export`` traces (for padding-exact models only)."""
    search = padded_neighbor_list if tracing() else neighbor_list
    return search(pos, batch, cutoff_upper, cutoff_lower, box=box, loop=loop, pbc=pbc, half=half)


def check_cells(box: Tensor, cutoff_upper: float) -> None:
    """ValueError (eager) or an in-graph assertion (tracing) unless every cell height of ``box``
    [3, 3] or [S, 3, 3] is at least ``cutoff_upper`` (the 27 images then cover every pair)."""
    heights = cell_geometry(box.detach().reshape(-1, 3, 3).to(torch.float64))[2]
    wide = (heights >= cutoff_upper).all()
    message = (
        f"the static-shape neighbour search needs every cell height >= the cutoff {cutoff_upper:g}; "
        "use the dynamic search (static_shapes=False, not compiled) for thinner cells"
    )
    if tracing():
        torch._assert_async(wide, message)
    elif not bool(wide):
        raise ValueError(f"{message}; got heights {heights.tolist()}")


def padded_neighbor_list(
    pos: Tensor,
    batch: Tensor,
    cutoff_upper: float,
    cutoff_lower: float = 0.0,
    box: Optional[Tensor] = None,
    loop: bool = False,
    pbc: Optional[Sequence[bool]] = None,
    half: bool = False,
) -> NeighborList:
    """Every candidate pair of ``pos`` [N, 3] (systems ``batch`` [N], sorted), padded (module
    docstring); a fully periodic ``box`` [3, 3] or [S, 3, 3] or None. Arguments as for
    :func:`~fastnnp.neighbors.neighbor_list`; ``pbc`` must be None or all True."""
    if half and loop:
        raise ValueError("half=True lists each pair of distinct atoms or images once; it takes no self loops (loop=False)")
    if pbc is not None and not all(pbc):
        raise ValueError(f"the static-shape neighbour search handles open or fully periodic systems, got pbc={list(pbc)}")
    n = pos.shape[0]
    device = pos.device
    i, j = torch.triu_indices(n, n, 1, device=device)
    image = torch.zeros(i.shape[0], 3, dtype=torch.long, device=device)
    if box is not None:
        check_cells(box, cutoff_upper)
        i, j, image = _with_images(pos, batch, box, i, j)
    vec = _vectors(pos, box, batch, i, j, image)
    length = safe_norm(vec)
    real = (batch[i] == batch[j]) & (length >= cutoff_lower) & (length < cutoff_upper)
    padding = 2.0 * float(cutoff_upper)
    pad_vec = torch.zeros_like(vec)
    pad_vec[:, 0] = padding
    vec = torch.where(real[:, None], vec, pad_vec)
    length = torch.where(real, length, torch.full_like(length, padding))
    if not half:
        i, j = torch.cat((i, j)), torch.cat((j, i))
        image, vec, length = torch.cat((image, -image)), torch.cat((vec, -vec)), torch.cat((length, length))
    if loop:
        atoms = torch.arange(n, device=device)
        i, j = torch.cat((i, atoms)), torch.cat((j, atoms))
        image = torch.cat((image, torch.zeros(n, 3, dtype=torch.long, device=device)))
        vec, length = torch.cat((vec, torch.zeros_like(pos))), torch.cat((length, torch.zeros_like(pos[:, 0])))
    return NeighborList(torch.stack((i, j)), vec, length, image)


def _with_images(pos: Tensor, batch: Tensor, box: Tensor, i: Tensor, j: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The candidates (i, j) for each of the 27 images and every atom's own 13 positive images,
    with the images for the positions as given: ``n + shift_i - shift_j``."""
    device = pos.device
    cells = box.detach().to(torch.float64).reshape(-1, 3, 3)
    inverse = cell_geometry(cells)[0]
    p = pos.detach().to(torch.float64)
    if cells.shape[0] == 1:
        frac = p @ inverse[0]
    else:
        frac = torch.bmm(p.unsqueeze(1), inverse.index_select(0, batch)).squeeze(1)
    shift = torch.floor(frac).to(torch.long)
    images, own = _IMAGES.to(device), _OWN_IMAGES.to(device)
    atoms = torch.arange(pos.shape[0], device=device)
    pair_i = torch.cat((i.repeat(images.shape[0]), atoms.repeat_interleave(own.shape[0])))
    pair_j = torch.cat((j.repeat(images.shape[0]), atoms.repeat_interleave(own.shape[0])))
    n = torch.cat((images.repeat_interleave(i.shape[0], 0), own.repeat(pos.shape[0], 1)))
    return pair_i, pair_j, n + shift[pair_i] - shift[pair_j]


def _vectors(pos: Tensor, box: Optional[Tensor], batch: Tensor, i: Tensor, j: Tensor, image: Tensor) -> Tensor:
    """``pos[i] - pos[j] - image @ box`` with :func:`~fastnnp.neighbors.edges.edge_vectors`'
    arithmetic (the same rounding), for every edge: no data-dependent selection."""
    vec = pos.index_select(0, i) - pos.index_select(0, j)
    if box is None:
        return vec
    box = box.to(pos.dtype)
    img = image.to(pos.dtype)
    if box.dim() == 2 or box.shape[0] == 1:
        a, b, c = box.reshape(3, 3)
    else:
        rows = box.index_select(0, batch.index_select(0, i))
        a, b, c = rows[:, 0], rows[:, 1], rows[:, 2]
    return vec - (img[:, 0:1] * a + img[:, 1:2] * b + img[:, 2:3] * c)
