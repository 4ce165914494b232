"""Wall-clock timing of energy + forces calls and the memory they took.

A call is timed with ``time.perf_counter`` between two device synchronisations, so it counts
what an MD step waits for: Python and kernel-launch overhead and the kernels themselves (the
outputs stay on the device). Warm-up calls are timed but kept out of the statistics.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch

EXTRA_WARMUP = 10  # warm-up calls beyond the requested number, at most
STILL_FASTER = 2 / 3  # a call this much faster than the one before means: not warm yet


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable, device: torch.device) -> tuple[float, object]:
    """Seconds one ``call()`` takes, the device synchronised before and after, and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = call()
    synchronize(device)
    return time.perf_counter() - start, out


def repeat(call: Callable, device: torch.device, first_s: float, warmup: int, repeats: int, target_s: float) -> dict:
    """Warm-up calls, then timed calls.

    Warm-up: ``warmup`` calls, and more (up to :data:`EXTRA_WARMUP`) while a call is still
    faster than 2/3 of the one before it (``first_s``: the first call's seconds), since
    lazy initialisation, JIT profiling and allocator growth can take several calls. Timed:
    ``repeats`` calls, or fewer (at least min(3, repeats)) once ``target_s`` seconds of timed
    calls have passed. Returns ``warmup_s`` and ``samples_s``, seconds of each call.
    """
    warm: list[float] = []
    while _warming(warm, first_s, warmup):
        warm.append(timed(call, device)[0])
    samples: list[float] = []
    while len(samples) < repeats and (len(samples) < min(3, repeats) or sum(samples) < target_s):
        samples.append(timed(call, device)[0])
    return {"warmup_s": warm, "samples_s": samples}


def _warming(warm: list[float], first_s: float, warmup: int) -> bool:
    if len(warm) < warmup:
        return True
    if not warm or len(warm) >= warmup + EXTRA_WARMUP:
        return False
    return warm[-1] < STILL_FASTER * (warm[-2] if len(warm) > 1 else first_s)


def peak_memory_mib(device: torch.device) -> dict:
    """Peak memory of this process so far, MiB: on CUDA torch's allocator peak (``peak_mib``)
    and reserved peak; on CPU the peak resident set size (``peak_mib``)."""
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
