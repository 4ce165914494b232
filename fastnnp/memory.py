"""How much memory a model call will need, estimated before it runs, and a refusal when it
cannot fit.

The neighbour pairs dominate: a system of n atoms at density ρ (atoms/Å³) has about
n · ρ · 4/3 π r³ directed pairs within the cutoff r (at most n − 1 per atom without a cell).
The estimate is a lower bound, so that nothing that would fit is refused: the per-pair and
per-atom bytes (:data:`PAIR_BYTES`, :data:`ATOM_BYTES_PER_FEATURE`) are below what was measured
for the reference path (TensorNet, float32, energy + forces on the CPU: 5.3–10.7 kB per directed
pair at 48–441 neighbours per atom with F=64; about 1 kB per atom and channel with F=128 and no
pairs). The Triton path keeps no per-pair features, only the padded neighbour table, and per
atom at least one [N, 3, 3, F] feature tensor and its gradient (unmeasured on a GPU: both are
floors, the table's and the tensors' own bytes).

``check_fits`` compares the estimate with what the device has free (CPU: available RAM from
psutil, else /proc/meminfo; CUDA: ``torch.cuda.mem_get_info`` plus torch's cached free
blocks): one host query, made once per new system size or cell by its callers
(:class:`fastnnp.step.EnergyStep`, hence :class:`fastnnp.FastNNPCalculator`), never per step.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import nn

# Bytes per directed pair, per feature channel and fixed, of each path (float32; float64 doubles the per-feature part).
PAIR_BYTES = {"torch": (64, 64), "triton": (0, 16)}
# Bytes per atom and feature channel of each path (float32): torch measured ~1000; Triton 9 components x 2 x 4 B.
ATOM_BYTES_PER_FEATURE = {"torch": 400, "triton": 72}
DENSEST_MATTER = 0.5  # atoms / Å³; nothing denser exists (diamond 0.18, water 0.10): positions in other units?


class CallTooLarge(MemoryError):
    """A call whose estimated memory exceeds what the device has free."""


class CallEstimate(NamedTuple):
    """A call's estimated ``bytes`` (a lower bound), directed ``pairs``, and the largest
    system's ``pairs_per_atom`` and ``density`` (atoms / Å³, model length units)."""

    bytes: int
    pairs: int
    pairs_per_atom: float
    density: float


def estimate_call_bytes(
    n_atoms: Sequence[int],
    volumes: Sequence[float],
    periodic: bool,
    cutoff: float,
    features: int,
    path: str = "torch",
    itemsize: int = 4,
) -> CallEstimate:
    """Memory of one energy + forces call on systems of ``n_atoms`` atoms each, occupying
    ``volumes`` (cell volumes, or for open systems the volume their atoms span, Å³), for a
    model with ``cutoff`` (Å) and ``features`` channels on ``path`` ("torch" or "triton") with
    ``itemsize``-byte floats."""
    if path not in PAIR_BYTES:
        raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PAIR_BYTES)}")
    sphere = 4 / 3 * math.pi * cutoff**3
    pairs, per_atom, densest = 0.0, 0.0, 0.0
    for n, volume in zip(n_atoms, volumes, strict=True):
        density = n / volume
        neighbours = density * sphere if periodic else min(n - 1, density * sphere)
        pairs += n * neighbours
        per_atom, densest = max(per_atom, neighbours), max(densest, density)
    per_feature, fixed = PAIR_BYTES[path]
    scale = itemsize / 4
    per_atom_bytes = ATOM_BYTES_PER_FEATURE[path] * features * scale
    total = pairs * (per_feature * features * scale + fixed) + sum(n_atoms) * per_atom_bytes
    return CallEstimate(int(total), int(pairs), per_atom, densest)


def system_volumes(positions: Optional[Sequence[np.ndarray]], cells: Optional[Sequence[np.ndarray]], cutoff: float) -> list[float]:
    """Per system: the cell's volume, or for an open system the box its atoms span, padded by
    the cutoff on every axis (an upper bound of its volume: the pair count stays a lower bound)."""
    if cells is not None:
        return [abs(float(np.linalg.det(cell))) for cell in cells]
    return [float(np.prod(np.ptp(p, axis=0) + cutoff)) for p in positions]


def model_footprint(model: nn.Module) -> tuple[float, int, str, int]:
    """(cutoff Å, feature channels, path, float bytes) of a fastnnp potential."""
    representation = model.representation_model
    triton = any(hasattr(module, "table_search") for module in model.modules())
    return (float(representation.cutoff_upper), int(representation.hidden_channels), "triton" if triton else "torch",
            torch.finfo(model.dtype).bits // 8)


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory free for a call on ``device``, or None where it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        return _meminfo_available()
    return int(psutil.virtual_memory().available)


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def check_fits(estimate: CallEstimate, device: torch.device, n_atoms: int, cutoff: float) -> None:
    """Raise :class:`CallTooLarge` with the estimate and what to do when ``estimate`` exceeds
    the memory free on ``device`` (:func:`available_bytes`)."""
    free = available_bytes(device)
    if free is None or estimate.bytes <= free:
        return
    hint = ""
    if estimate.density > DENSEST_MATTER:
        hint = (f" A density of {estimate.density:.2f} atoms/Å³ is denser than any matter (water: 0.10): are the "
                "positions (and cell) in the model's length unit?")
    raise CallTooLarge(
        f"this call needs at least {estimate.bytes / 2**30:.1f} GiB but {device} has {free / 2**30:.1f} GiB free: "
        f"{n_atoms} atoms with about {estimate.pairs:,} neighbour pairs within {cutoff:g} Å "
        f"({estimate.pairs_per_atom:,.0f} per atom at {estimate.density:.3f} atoms/Å³). Split the systems into "
        f"smaller calls (FastNNPCalculator.calculate_batch(max_atoms=...)), use fewer atoms or a lower density, "
        f"or a device with more memory.{hint}"
    )
