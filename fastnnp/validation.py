"""Input checks that turn bad input into a clear error before any model code runs."""

import math

from typing import Optional

import torch
from torch import Tensor

from .neighbors.checks import singular_cells


def _first_bad_index(mask: Tensor) -> int:
    return int(torch.nonzero(mask.reshape(mask.shape[0], -1).any(dim=1))[0, 0])


def check_inputs(
    z: Tensor,
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor],
    q: Optional[Tensor],
    max_z: int,
    dtype: torch.dtype,
) -> int:
    """Validate a model call; return the number of systems.

    Shapes: z [N] integer, pos [N, 3] floating in ``dtype``, batch [N] integer sorted from 0,
    box None, [3, 3] or [n_systems, 3, 3], q None or [n_systems].
    """
    if not isinstance(z, Tensor) or not isinstance(pos, Tensor) or not isinstance(batch, Tensor):
        raise TypeError("z, pos and batch must be torch tensors")
    if z.dim() != 1:
        raise ValueError(f"z must have shape [n_atoms], got {tuple(z.shape)}")
    if z.dtype.is_floating_point or z.dtype == torch.bool or z.dtype.is_complex:
        raise TypeError(f"z must hold integer atomic numbers, got dtype {z.dtype}")
    n_atoms = z.shape[0]
    if n_atoms == 0:
        raise ValueError("no atoms: z is empty")
    if pos.shape != (n_atoms, 3):
        raise ValueError(f"pos must have shape [n_atoms, 3] = [{n_atoms}, 3], got {tuple(pos.shape)}")
    if pos.dtype != dtype:
        raise TypeError(
            f"pos has dtype {pos.dtype} but the model runs in {dtype}; convert pos or load the model "
            f"with dtype={pos.dtype}"
        )
    if batch.shape != (n_atoms,):
        raise ValueError(f"batch must have shape [n_atoms] = [{n_atoms}], got {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise TypeError(f"batch must hold integer system indices, got dtype {batch.dtype}")
    if z.device != pos.device or batch.device != pos.device:
        raise ValueError(f"z, pos and batch must be on one device, got {z.device}, {pos.device}, {batch.device}")
    bad_z = (z < 1) | (z >= max_z)
    if bool(bad_z.any()):
        i = _first_bad_index(bad_z)
        raise ValueError(
            f"atomic number {int(z[i])} of atom {i} is not supported: this model handles 1..{max_z - 1}"
        )
    # one sum is finite when every position is (a NaN or Inf anywhere makes it non-finite); only
    # then is the bad atom looked for (a sum that overflowed finds none)
    if not math.isfinite(float(pos.detach().sum())):
        bad_pos = ~torch.isfinite(pos)
        if bool(bad_pos.any()):
            i = _first_bad_index(bad_pos)
            raise ValueError(f"position of atom {i} is not finite: {pos[i].tolist()}")
    if int(batch[0]) != 0 or bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (non-decreasing) and start at 0: atoms of one system together")
    if bool(((batch[1:] - batch[:-1]) > 1).any()):
        raise ValueError("batch skips a system index: every system 0..n_systems-1 needs atoms")
    n_systems = int(batch[-1]) + 1
    if box is not None:
        _check_box(box, n_systems, dtype)
    if q is not None:
        if q.shape not in ((n_systems,), (n_systems, 1)):
            raise ValueError(f"q (total charge) must have shape [n_systems] = [{n_systems}], got {tuple(q.shape)}")
        if not bool(torch.isfinite(q.to(torch.float64)).all()):
            raise ValueError("q (total charge) is not finite")
    return n_systems


def _check_box(box: Tensor, n_systems: int, dtype: torch.dtype) -> None:
    """Shape, dtype, finiteness and the singular-cell rule of every layer (:func:`singular_cells`)."""
    if box.shape not in ((3, 3), (n_systems, 3, 3)):
        raise ValueError(
            f"box must have shape [3, 3] or [n_systems, 3, 3] = [{n_systems}, 3, 3], got {tuple(box.shape)}"
        )
    if not box.dtype.is_floating_point:
        raise TypeError(f"box must be floating point, got dtype {box.dtype}")
    if not bool(torch.isfinite(box).all()):
        raise ValueError("box is not finite")
    cells = box.reshape(-1, 3, 3).to(torch.float64)
    singular = singular_cells(cells)
    if bool(singular.any()):
        s = int(torch.nonzero(singular)[0, 0])
        raise ValueError(f"box of system {s} is singular (zero volume): {cells[s].tolist()}")
