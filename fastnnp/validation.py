"""Input checks that turn bad input into a clear error before any model code runs.

Two kinds of checks (:func:`check_inputs`):

* **static**: types, shapes, dtypes and devices, read from tensor metadata. They run on every
  call, also while ``torch.compile`` or ``torch.export`` traces the model (then once, at
  tracing, and guarded by the compiled graph).
* **values**: atomic numbers in range, finite positions, a sorted and gap-free ``batch``, a
  non-singular box, a finite total charge, no two atoms closer than :data:`MIN_DISTANCE`.
  Eagerly they read the values on the host (a few syncs) and raise ``ValueError`` naming the
  atom, system or argument. Under compile / export tracing nothing may be read on the host:
  the same conditions become in-graph assertions (``torch._assert_async``), which raise
  ``RuntimeError`` with the same wording (without the atom's index) when the compiled or
  exported model runs on bad input (:func:`tracing`). The minimum-distance check needs a
  neighbour search and is eager only.
"""

import math
from typing import Any, Optional

import torch
from torch import Tensor

from .neighbors import neighbor_list
from .neighbors.checks import singular_cells
from .neighbors.static import tracing

# Two atoms closer than this (in the model's length unit) are an error: 0.01 Å for models in Å,
# 0.1 Å for models in nm (TorchMD-Net models carry no unit). No bond is this short; a pair at
# distance 0 makes the edge direction undefined and the forces meaningless (~1e30 in TensorNet).
MIN_DISTANCE = 0.01


def check_tensor_argument(name: str, value: Any, kind: str) -> None:
    """TypeError naming ``name`` unless ``value`` is a torch tensor (``kind`` says what it holds)."""
    if not isinstance(value, Tensor):
        hint = " (use torch.as_tensor)" if type(value).__module__.startswith("numpy") else ""
        shown = f"{type(value).__module__}.{type(value).__name__}" if type(value).__module__ != "builtins" else type(value).__name__
        raise TypeError(f"{name} must be a torch.Tensor of {kind}, got {shown} {' '.join(repr(value).split())[:60]}{hint}")


def finite_number(value: Any, name: str, kind: str = "a number") -> float:
    """``value`` as a float; ValueError naming ``name`` where it is not a number (``kind`` says
    what it should be) or not finite (a total charge from ASE's atoms.info or OpenMM's charge=)."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be {kind}, got {value!r}") from error
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_inputs(
    z: Tensor,
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor],
    q: Optional[Tensor],
    max_z: int,
    dtype: torch.dtype,
    device: Optional[torch.device] = None,
    num_systems: Optional[int] = None,
    geometry: bool = True,
) -> int:
    """Validate a model call; return the number of systems.

    Shapes: z [N] integer, pos [N, 3] floating in ``dtype``, batch [N] integer sorted from 0,
    box None, [3, 3] or [n_systems, 3, 3], q None or [n_systems]; all on ``device`` (the
    model's; default: pos's). ``num_systems``, where given, must be the number of systems
    ``batch`` holds (TorchMD-Net's static-shape hint); under tracing it is the output size.
    ``geometry=False`` leaves :func:`check_geometry` to the caller (a model whose kernels flag
    close pairs on the device, :attr:`fastnnp.status.StepStatus.CLOSE`).
    """
    n_atoms = _check_static(z, pos, batch, box, q, dtype, device)
    if num_systems is not None and (isinstance(num_systems, bool) or not isinstance(num_systems, int) or num_systems < 1):
        raise TypeError(f"num_systems must be a positive int (the number of systems in batch), got {num_systems!r}")
    if tracing():
        n_systems = _traced_systems(batch, box, q, num_systems)
        _assert_values(z, pos, batch, box, q, max_z, n_systems)
        return n_systems
    _check_atoms(z, pos, max_z)
    n_systems = _check_batch(batch)
    if num_systems is not None and num_systems != n_systems:
        raise ValueError(f"num_systems={num_systems} but batch holds {n_systems} systems (0..{n_systems - 1})")
    if box is not None:
        _check_box_shape(box, n_systems)
        _check_box_values(box)
    if q is not None:
        _check_charge_shape(q, n_systems)
        if not bool(torch.isfinite(q.to(torch.float64)).all()):
            raise ValueError("q (total charge) is not finite")
    if geometry:
        check_geometry(pos, batch, box)
    return n_systems


def _check_static(z, pos, batch, box, q, dtype: torch.dtype, device: Optional[torch.device]) -> int:
    """Types, shapes, dtypes and devices (metadata only); the number of atoms."""
    check_tensor_argument("z", z, "integer atomic numbers [n_atoms]")
    check_tensor_argument("pos", pos, f"positions [n_atoms, 3] in {dtype}")
    check_tensor_argument("batch", batch, "integer system indices [n_atoms]")
    if box is not None:
        check_tensor_argument("box", box, "cell rows [3, 3] or [n_systems, 3, 3]")
    if q is not None:
        check_tensor_argument("q", q, "total charges [n_systems]")
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
    if box is not None and not box.dtype.is_floating_point:
        raise TypeError(f"box must be floating point, got dtype {box.dtype}")
    if q is not None and (q.dtype == torch.bool or q.dtype.is_complex):
        raise TypeError(f"q (total charge) must be a real number per system, got dtype {q.dtype}")
    device = pos.device if device is None else device
    named = {"z": z, "pos": pos, "batch": batch, "box": box, "q": q}
    for name, value in named.items():
        if value is not None and value.device != device:
            raise ValueError(
                f"{name} is on {value.device} but the model is on {device}: move the inputs with .to({str(device)!r})"
            )
    return n_atoms


def _first_bad_index(mask: Tensor) -> int:
    return int(torch.nonzero(mask.reshape(mask.shape[0], -1).any(dim=1))[0, 0])


def _check_atoms(z: Tensor, pos: Tensor, max_z: int) -> None:
    bad_z = (z < 1) | (z >= max_z)
    if bool(bad_z.any()):
        i = _first_bad_index(bad_z)
        raise ValueError(
            f"atomic number {int(z[i])} of atom {i} is not supported: this model handles 1..{max_z - 1}"
        )
    # one sum is finite when every position is (a NaN or Inf anywhere makes it non-finite); only
    # then is the bad atom looked for (a sum that overflowed finds none)
    if not math.isfinite(float(pos.detach().sum())):
        bad_pos = ~torch.isfinite(pos.detach())
        if bool(bad_pos.any()):
            i = _first_bad_index(bad_pos)
            raise ValueError(f"position of atom {i} is not finite: {pos[i].tolist()}")


def _check_batch(batch: Tensor) -> int:
    if int(batch[0]) != 0 or bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (non-decreasing) and start at 0: atoms of one system together")
    if bool(((batch[1:] - batch[:-1]) > 1).any()):
        raise ValueError("batch skips a system index: every system 0..n_systems-1 needs atoms")
    return int(batch[-1]) + 1


def _check_box_shape(box: Tensor, n_systems: int) -> None:
    if box.shape not in ((3, 3), (n_systems, 3, 3)):
        raise ValueError(
            f"box must have shape [3, 3] or [n_systems, 3, 3] = [{n_systems}, 3, 3], got {tuple(box.shape)}"
        )


def _check_charge_shape(q: Tensor, n_systems: int) -> None:
    if q.shape not in ((n_systems,), (n_systems, 1)):
        raise ValueError(f"q (total charge) must have shape [n_systems] = [{n_systems}], got {tuple(q.shape)}")


def _check_box_values(box: Tensor) -> None:
    """Finiteness and the singular-cell rule of every layer (:func:`singular_cells`)."""
    if not bool(torch.isfinite(box).all()):
        raise ValueError("box is not finite")
    cells = box.detach().reshape(-1, 3, 3).to(torch.float64)
    singular = singular_cells(cells)
    if bool(singular.any()):
        s = int(torch.nonzero(singular)[0, 0])
        raise ValueError(f"box of system {s} is singular (zero volume): {cells[s].tolist()}")


def check_geometry(pos: Tensor, batch: Tensor, box: Optional[Tensor]) -> None:
    """ValueError naming both atoms (and the lattice image) of the first pair closer than
    :data:`MIN_DISTANCE`; one search with that cutoff (O(N), no pairs for sane input)."""
    with torch.no_grad():
        close = neighbor_list(pos.detach(), batch, MIN_DISTANCE, box=box, half=True)
    if close.edge_index.shape[1] == 0:
        return
    k = int(torch.argmin(close.edge_weight))
    i, j = (int(a) for a in close.edge_index[:, k])
    image = close.image[k].tolist()
    where = "" if not any(image) else f" (its periodic image {image})"
    raise ValueError(
        f"atoms {i} and {j}{where} are {float(close.edge_weight[k]):.3g} apart, closer than the "
        f"minimum distance {MIN_DISTANCE} (length units of the model): two atoms at one position "
        "are not a structure; remove the duplicate"
    )


def _traced_systems(batch: Tensor, box: Optional[Tensor], q: Optional[Tensor], num_systems: Optional[int]) -> int:
    """The number of systems without a host read: ``num_systems``, else the length of a
    per-system box or of ``q``; else ValueError (the caller must pass ``num_systems``)."""
    for known in (num_systems, None if box is None or box.dim() == 2 else box.shape[0],
                  None if q is None else q.shape[0]):
        if known is not None:
            return int(known)
    raise ValueError(
        "under torch.compile / torch.export the number of systems cannot be read from batch: pass "
        "num_systems= (a Python int), as for TorchMD-Net's static shapes, or omit batch for one system"
    )


def _assert_values(z, pos, batch, box, q, max_z: int, n_systems: int) -> None:
    """The value checks as in-graph assertions (compile / export); no host read."""
    torch._assert_async(((z >= 1) & (z < max_z)).all(), f"atomic numbers must be in 1..{max_z - 1}")
    total = pos.detach().sum()
    torch._assert_async(total - total == 0, "positions must be finite")
    torch._assert_async(batch[0] == 0, "batch must start at 0")
    steps = batch[1:] - batch[:-1]
    torch._assert_async(((steps == 0) | (steps == 1)).all(), "batch must be sorted and skip no system index")
    torch._assert_async(batch[-1] == n_systems - 1, f"batch must hold num_systems = {n_systems} systems")
    if box is not None:
        _check_box_shape(box, n_systems)
        cells = box.detach().reshape(-1, 3, 3).to(torch.float64)
        torch._assert_async(torch.isfinite(cells).all(), "box must be finite")
        torch._assert_async(~singular_cells(cells).any(), "box must not be singular (zero volume)")
    if q is not None:
        _check_charge_shape(q, n_systems)
        torch._assert_async(torch.isfinite(q.to(torch.float64)).all(), "q (total charge) must be finite")
