"""What a result was measured on: machine, package versions, the code's commit and digest."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import os
import platform
import resource
import subprocess
import time

import psutil
import torch

PACKAGES = ("fastnnp", "torch", "triton", "torchmd-net", "warp-lang", "ase", "numpy", "matplotlib")
_FASTNNP_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment() -> dict:
    """Date, host, CPU, cores, memory, torch threads, CUDA, versions, commit and source digest.

    The GPU's name is not asked for here (that would hold a CUDA context in this process for
    the whole run): the runner fills ``device`` in from its workers.
    """
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "cpu": cpu_name(),
        "cpu_cores": psutil.cpu_count(logical=False), "cpu_threads": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),

        "cuda": torch.version.cuda, "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "versions": versions, "commit": commit(), "source_digest": source_digest(),
    }


class OtherCpuUse:
    """The share of the machine's CPU capacity that other processes (or, in a virtual machine,
    the host: steal time) took since this object was made; this process and the children it
    has waited for do not count. Well above 0, CPU timings of the run are not to be trusted."""

    def __init__(self):
        self.start = (time.monotonic(), *self._cpu_seconds())

    def share(self) -> float:
        """Fraction of all logical CPUs' time, 0 .. 1."""
        wall, busy, own = (now - then for now, then in zip((time.monotonic(), *self._cpu_seconds()), self.start, strict=True))
        return max(0.0, (busy - own) / (wall * psutil.cpu_count())) if wall > 0 else 0.0

    @staticmethod
    def _cpu_seconds() -> tuple[float, float]:
        """(CPU seconds the machine was busy since boot, those this process and its reaped children used)."""
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        own = sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
        return sum(times) - idle, own


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return platform.processor() or platform.machine()


def commit() -> str:
    """``git rev-parse HEAD`` of the checkout fastnnp is imported from, else $FASTNNP_COMMIT,
    else "unknown" (an installed wheel)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=_FASTNNP_DIR, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return os.environ.get("FASTNNP_COMMIT", "unknown")


def source_digest() -> str:
    """sha256 (16 hex digits) over the paths and contents of fastnnp's *.py, its kernels
    included: names the code that ran even with uncommitted changes."""
    files = {}
    for folder, _, names in os.walk(_FASTNNP_DIR):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                files[os.path.join("fastnnp", os.path.relpath(path, _FASTNNP_DIR))] = path
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        with open(files[name], "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]
