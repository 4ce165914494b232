"""Input checks of the neighbour searches, and the one rule that says when a cell is singular.

:func:`singular_cells` is the box check of every layer: the searches (:func:`check_search_inputs`),
a model call's validation (:mod:`fastnnp.validation`) and the ASE calculator, so a cell is
accepted by all of them or by none. Each layer words its own error message.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# A cell is singular when its volume is at most this fraction of the product of its row lengths
# (the volume of a cell with the same rows at right angles), whatever the length unit.
SINGULAR_VOLUME_RATIO = 1e-10


def singular_cells(cells: Tensor) -> Tensor:
    """[S] bool: True where cell s of ``cells`` [S, 3, 3] (rows a, b, c; finite, float64) is
    singular: ``|det| <= 1e-10 |a| |b| |c|`` (:data:`SINGULAR_VOLUME_RATIO`). All-zero cells
    and cells with a zero row are singular."""
    volume = torch.linalg.det(cells).abs()
    lengths = cells.norm(dim=-1).prod(dim=-1)
    return volume <= SINGULAR_VOLUME_RATIO * lengths.clamp(min=1e-300)


def check_search_inputs(
    pos: Tensor,
    batch: Optional[Tensor],
    cutoff_upper: float,
    cutoff_lower: float,
    box: Optional[Tensor],
    pbc: Optional[Sequence[bool]],
) -> Tuple[Tensor, Tensor, Optional[Tensor], List[bool], float, float]:
    """Check and normalise the arguments of a neighbour search.

    Returns (pos [N, 3], batch [N] int64 on pos's device (zeros when None), box None, (3, 3)
    or (S', 3, 3) on pos's device (a (1, 3, 3) box becomes (3, 3)), pbc as three bools
    (default: all True when a box is given), cutoff_upper, cutoff_lower as floats).

    Raises:
        ValueError: bad shapes or dtypes, negative system indices, bad cutoffs, non-finite
            positions or box, pbc without a box, singular box (:func:`singular_cells`).
    """
    pos, batch = _positions_and_batch(pos, batch)
    cu, cl = _cutoffs(cutoff_upper, cutoff_lower)
    # one sum first (finite when every position is); the elementwise test only when it is not
    if pos.shape[0] > 0 and not math.isfinite(float(pos.detach().sum())) and not bool(torch.isfinite(pos.detach()).all()):
        raise ValueError("pos contains non-finite values")

    if pbc is not None:
        pbc_list = [bool(p) for p in pbc]
        if len(pbc_list) != 3:
            raise ValueError(f"pbc must have 3 entries (one per lattice vector), got {len(pbc_list)}")
    else:
        pbc_list = [box is not None] * 3

    if box is None:
        if any(pbc_list):
            raise ValueError(f"pbc={pbc_list} requires a box")
        return pos, batch, None, pbc_list, cu, cl
    n_sys = int(batch.max()) + 1 if pos.shape[0] > 0 else 0
    return pos, batch, _checked_box(box, n_sys, pos.device), pbc_list, cu, cl


def _positions_and_batch(pos: Tensor, batch: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must be a tensor of shape [N, 3], got {_shape(pos)}")
    if not pos.is_floating_point():
        raise ValueError(f"pos must be floating point, got {pos.dtype}")
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    if not isinstance(batch, Tensor) or batch.shape != (n,):
        raise ValueError(f"batch must be a tensor of shape [{n}], got {_shape(batch)}")
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"batch must be an integer tensor, got {batch.dtype}")
    batch = batch.to(device=pos.device, dtype=torch.long)
    if n > 0 and int(batch.min()) < 0:
        raise ValueError("batch must not contain negative system indices")
    return pos, batch


def _cutoffs(cutoff_upper: float, cutoff_lower: float) -> Tuple[float, float]:
    cu, cl = float(cutoff_upper), float(cutoff_lower)
    if not cu > 0 or cu != cu or cu == float("inf"):
        raise ValueError(f"cutoff_upper must be a finite positive number, got {cutoff_upper}")
    if not cl < cu:
        raise ValueError(f"cutoff_lower ({cutoff_lower}) must be smaller than cutoff_upper ({cutoff_upper})")
    return cu, cl


def _checked_box(box: Tensor, n_sys: int, device: torch.device) -> Tensor:
    """The box as (3, 3) or (>= n_sys, 3, 3) on ``device``; ValueError if it is not valid."""
    if not isinstance(box, Tensor):
        raise ValueError(f"box must be a tensor, got {type(box).__name__}")
    if not box.is_floating_point():
        raise ValueError(f"box must be floating point, got {box.dtype}")
    if box.shape == (3, 3) or box.shape == (1, 3, 3):
        box = box.reshape(3, 3)
    elif box.dim() == 3 and box.shape[1:] == (3, 3):
        if box.shape[0] < n_sys:
            raise ValueError(
                f"box has shape {tuple(box.shape)} but batch has {n_sys} systems; "
                "expected (3, 3) or (n_systems, 3, 3)"
            )
    else:
        raise ValueError(f"box must have shape (3, 3) or (n_systems, 3, 3), got {tuple(box.shape)}")
    box = box.to(device=device)
    b64 = box.detach().to(torch.float64).reshape(-1, 3, 3)
    if not bool(torch.isfinite(b64).all()):
        raise ValueError("box contains non-finite values")
    if b64.shape[0] > 0:
        bad = singular_cells(b64)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            where = "" if box.dim() == 2 else f" (system {k})"
            raise ValueError(
                f"box is singular (zero or near-zero volume){where}: its rows (lattice vectors) "
                f"must be linearly independent, got {b64[k].tolist()}"
            )
    return box


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__
