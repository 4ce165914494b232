"""Arithmetic on measurements: sample statistics, throughput, MD speed, agreement, ratios."""

from __future__ import annotations

import statistics

import numpy as np

SECONDS_PER_DAY = 86400.0
# Agreement with the reference row: |ΔE| <= rtol·max(1, |E_ref|) for every system of the
# input, max|ΔF| <= rtol·max(1, max|F_ref|) (energies in the model's units, forces likewise).
RTOL = {"float32": 1e-4, "float64": 1e-6}
# Rows held to their own tolerance instead (float32 runs): the TF32 rows, whose radial-MLP
# matmuls round their inputs to 10 mantissa bits (relative error ~5e-4 per product).
BACKEND_RTOL = {"fastnnp-triton-exact-tf32": 1e-2, "fastnnp-triton-exact-tf32-graph": 1e-2}


def tolerance(backend: str, dtype: str) -> float:
    """The relative tolerance ``backend``'s row is checked at in ``dtype`` ("float32" or
    "float64"): :data:`BACKEND_RTOL`'s for its rows (float32 only), else :data:`RTOL`'s."""
    if backend in BACKEND_RTOL:
        if dtype != "float32":
            raise ValueError(f"{backend} runs float32 only, not {dtype}")
        return BACKEND_RTOL[backend]
    return RTOL[dtype]


def sample_stats(samples_s: list[float]) -> dict:
    """Median, quartiles, min and max of per-call times, in milliseconds."""
    ms = [1e3 * s for s in samples_s]
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "min_ms": min(ms), "max_ms": max(ms)}


def ns_per_day(seconds_per_step: float, timestep_fs: float) -> float:
    """Simulated nanoseconds per day of MD when one step (one energy + forces call) takes
    ``seconds_per_step`` and advances ``timestep_fs`` femtoseconds."""
    return SECONDS_PER_DAY / seconds_per_step * timestep_fs * 1e-6


def throughput(n_atoms: int, seconds_per_step: float) -> dict:
    """Atom-steps per second and ns/day at 1 and 2 fs for one step of ``n_atoms`` atoms."""
    return {"atom_steps_per_s": n_atoms / seconds_per_step,
            "ns_per_day_1fs": ns_per_day(seconds_per_step, 1.0), "ns_per_day_2fs": ns_per_day(seconds_per_step, 2.0)}


def agreement(energy: np.ndarray, forces: np.ndarray, ref_energy: np.ndarray, ref_forces: np.ndarray,
              dtype: str, backend: str) -> dict:
    """Energies [n_systems] and forces [N, 3] of ``backend``'s row against the reference's, at
    :func:`tolerance` (``backend``, ``dtype``)."""
    rtol = tolerance(backend, dtype)
    energy_diff = np.abs(np.asarray(energy, np.float64) - ref_energy)
    force_diff = float(np.abs(np.asarray(forces, np.float64) - ref_forces).max())
    energy_ok = bool((energy_diff <= rtol * np.maximum(1.0, np.abs(ref_energy))).all())
    force_ok = force_diff <= rtol * max(1.0, float(np.abs(ref_forces).max()))
    return {"energy_max_abs_diff": float(energy_diff.max()), "force_max_abs_diff": force_diff, "rtol": rtol,
            "passed": energy_ok and force_ok}


def speedups(rows: list[dict], torchmdnet_modes: tuple[str, ...]) -> dict[str, dict]:
    """For every timed row of one system: TorchMD-Net's time / the row's time (> 1: the row is
    faster), against ``torchmdnet`` (its default) and against its fastest mode that ran."""
    times = {row["backend"]: row["median_ms"] for row in rows if "median_ms" in row}
    tmd = {mode: times[mode] for mode in torchmdnet_modes if mode in times}
    if not tmd:
        return {}
    best = min(tmd, key=tmd.get)
    out = {}
    for backend, ms in times.items():
        out[backend] = {"vs_torchmdnet": times["torchmdnet"] / ms if "torchmdnet" in times else None,
                        "vs_torchmdnet_best": tmd[best] / ms, "torchmdnet_best": best}
    return out
