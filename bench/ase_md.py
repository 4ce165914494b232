"""MD steps per second of an ASE VelocityVerlet loop: fastnnp's calculator beside TorchMD-Net's.

A periodic liquid-density water box (``fastnnp.systems.water_box``, default 1000 atoms) runs
NVE at 1 fs in float32 under the shipped TensorNet checkpoint (cutoff 4.5 Å) with

- ``FastNNPCalculator`` with its default Verlet skin, and with ``skin=0`` (search every step),
- TorchMD-Net 3.1.0's ``TMDNETCalculator`` (and on CUDA also with its ``compile=True``).

Every row starts from the same positions and Maxwell-Boltzmann velocities (300 K, seeded) in
a fresh process, so its first-call time (model load excluded) is its own. A few warm-up steps
are not timed; steps/s is the median over ``--blocks`` timed blocks. The first-step forces of
fastnnp and TorchMD-Net are compared (max |ΔF|, eV/Å). The load averages before and after the
run are recorded: other work on the machine slows every row.

    python bench/ase_md.py                                   # CUDA when available, else CPU
    python bench/ase_md.py --device cpu --steps 100 --out bench/results/ase_md_cpu.json
"""

import argparse
import concurrent.futures
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "data" / "tensornet" / "model.ckpt"
BASELINE = "torchmdnet"


def rows_for(device: str) -> list[str]:
    """The calculators measured on ``device``, in order."""
    rows = ["fastnnp", "fastnnp skin=0", BASELINE]
    return rows + ["torchmdnet compile"] if device == "cuda" else rows


def make_calculator(row: str, checkpoint: str, device: str):
    """The ASE calculator of ``row``, float32 on ``device``."""
    import torch

    if row.startswith("fastnnp"):
        from fastnnp.calculator import FastNNPCalculator

        skin = dict(skin=0.0) if row.endswith("skin=0") else {}
        return FastNNPCalculator(checkpoint, device=device, dtype=torch.float32, **skin)
    from torchmdnet.calculators import TMDNETCalculator

    return TMDNETCalculator(checkpoint, device=device, dtype=torch.float32, compile=row.endswith("compile"))


def measure(row: str, args: argparse.Namespace) -> dict:
    """Run one row's MD in this process; returns its timings and first-step energy and forces."""
    import torch
    from ase import units
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    from fastnnp.systems import water_box

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    if args.threads:
        torch.set_num_threads(args.threads)
    atoms = water_box(args.atoms, seed=args.seed)
    atoms.info["charge"] = 0
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    start = time.perf_counter()
    atoms.calc = make_calculator(row, args.checkpoint, args.device)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    forces = atoms.get_forces()
    first_call_s = time.perf_counter() - start
    energy = atoms.get_potential_energy()
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(args.warmup)
    builds_before = _neighbor_builds(atoms.calc)
    per_block = max(1, args.steps // args.blocks)
    rates = []
    for _ in range(args.blocks):
        start = time.perf_counter()
        dynamics.run(per_block)
        rates.append(per_block / (time.perf_counter() - start))
    builds = _neighbor_builds(atoms.calc)
    steps_per_s = statistics.median(rates)
    return dict(
        calculator=row, representation=type(atoms.calc.model.representation_model).__name__, load_s=load_s,
        first_call_s=first_call_s, warmup_steps=args.warmup, timed_steps=per_block * args.blocks,
        block_steps_per_s=rates, steps_per_s=steps_per_s, ms_per_step=1000.0 / steps_per_s,
        neighbor_searches_per_step=None if builds is None else (builds - builds_before) / (per_block * args.blocks),
        final_temperature_k=float(atoms.get_temperature()), threads=torch.get_num_threads(),
        first_energy_ev=float(energy), first_forces=forces,
    )


def _neighbor_builds(calc) -> "int | None":
    """Neighbour searches run so far by a fastnnp calculator with a Verlet skin, else None."""
    if getattr(calc, "skin", 0) == 0:
        return None
    from fastnnp.neighbors.reuse import neighbor_builds

    return neighbor_builds(calc.model)


def measure_isolated(row: str, args: argparse.Namespace) -> dict:
    """:func:`measure` in a fresh spawned process; an exception becomes an ``error`` entry."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(measure, row, args).result()
        except Exception as error:  # a row that fails is reported, not fatal
            return dict(calculator=row, error=f"{type(error).__name__}: {error}")


def force_agreement(results: list[dict]) -> dict:
    """Max |ΔF| (eV/Å) and |ΔE| (eV) of each fastnnp row's first step against TorchMD-Net's."""
    base = next((r for r in results if r["calculator"] == BASELINE and "error" not in r), None)
    agreement = {}
    for r in results:
        if base is None or not r["calculator"].startswith("fastnnp") or "error" in r:
            continue
        agreement[r["calculator"]] = dict(
            max_abs_force_diff_ev_per_a=float(np.abs(r["first_forces"] - base["first_forces"]).max()),
            max_abs_force_ev_per_a=float(np.abs(base["first_forces"]).max()),
            energy_diff_ev=r["first_energy_ev"] - base["first_energy_ev"],
        )
    return agreement


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def git_commit() -> str:
    """Short HEAD commit, with ``+dirty`` when tracked files differ from it (like ``git describe --dirty``)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def versions() -> dict:
    """Versions of the packages measured."""
    found = {}
    for name in ("torch", "ase", "fastnnp", "torchmd-net", "triton"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def table(results: list[dict], header: str) -> str:
    """A Markdown table of the rows."""
    base = next((r["steps_per_s"] for r in results if r["calculator"] == BASELINE and "error" not in r), None)
    lines = [header, "", "| calculator | first call s | steps/s | ms/step | vs TMDNETCalculator |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['calculator']} | {r['error']} | | | |")
            continue
        ratio = f"{r['steps_per_s'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {r['calculator']} | {r['first_call_s']:.3f} | {r['steps_per_s']:.2f} | "
                     f"{r['ms_per_step']:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=1000, help="atoms in the water box (default 1000)")
    parser.add_argument("--steps", type=int, help="timed MD steps per row (default 100 on CPU, 2000 on CUDA)")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks; steps/s is their median")
    parser.add_argument("--warmup", type=int, help="untimed MD steps after the first call (default 5 on CPU, 50 on CUDA)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the box and the velocities")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--out", help="JSON output (default bench/results/ase_md_<device>.json)")
    args = parser.parse_args()
    args.steps = args.steps or (2000 if args.device == "cuda" else 100)
    args.warmup = args.warmup if args.warmup is not None else (50 if args.device == "cuda" else 5)
    out = Path(args.out or ROOT / "bench" / "results" / f"ase_md_{args.device}.json")

    load_before = os.getloadavg()
    results = []
    for row in rows_for(args.device):
        result = measure_isolated(row, args)
        results.append(result)
        summary = {k: v for k, v in result.items() if k not in ("first_forces", "block_steps_per_s")}
        print(json.dumps(summary), flush=True)
    agreement = force_agreement(results)
    for row, numbers in agreement.items():
        print(f"first-step forces, {row} vs TMDNETCalculator: max |ΔF| = "
              f"{numbers['max_abs_force_diff_ev_per_a']:.2e} eV/Å (max |F| {numbers['max_abs_force_ev_per_a']:.2f}), "
              f"ΔE = {numbers['energy_diff_ev']:.2e} eV")
    for r in results:
        r.pop("first_forces", None)

    report = dict(
        benchmark="ASE VelocityVerlet, 1 fs, float32, TensorNet (tests/data/tensornet/model.ckpt, cutoff 4.5 Å)",
        system=dict(kind="fastnnp.systems.water_box", atoms=args.atoms, seed=args.seed, temperature_k=300.0),
        device=args.device, device_name=device_name(args.device), cpu_count=os.cpu_count(),
        load_average_1_5_15_min=dict(before=load_before, after=os.getloadavg()),
        threads=next((r["threads"] for r in results if "threads" in r), None),
        python=platform.python_version(), versions=versions(), commit=git_commit(),
        settings=dict(steps=args.steps, blocks=args.blocks, warmup=args.warmup),
        rows=results, force_agreement=agreement,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results, f"{args.atoms}-atom water box, {report['device_name']}, {report['threads']} threads, "
                         f"torch {report['versions']['torch']}, commit {report['commit']}"))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
