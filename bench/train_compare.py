"""Training side by side: ``torchmd-train`` (TorchMD-Net 3.1.0) and ``fastnnp train`` on one config.

Both tools train TensorNet on ``<data>/xtb-molecules`` with the config TorchMD-Net's reference
model was trained with (``<data>/torchmdnet-3.1.0/tensornet/input.yaml``: F=64, 2 layers, cutoff
4.5 Å, batch 16, lr 1e-3, y_weight 0.05, neg_dy_weight 0.95), the same ``splits.npz`` and the
same number of epochs, each in its own process with the same thread count. Data paths are made
absolute in a temporary copy of the config.

Reported per tool:

- wall time per epoch: median of the intervals between consecutive per-epoch checkpoints
  (file modification times; both tools write one every epoch), i.e. training, validation,
  the test pass every ``test_interval`` epochs and checkpoint writing; and the whole process's
  wall time (start-up, data loading and the final test included);
- test MAE of energy (per molecule, eV) and forces (per component, eV/Å) of the tool's best
  checkpoint, evaluated by one common routine (``fastnnp.load_model``, equal to TorchMD-Net's
  ``load_model`` to fp32 rounding) over the whole test split; and each tool's own report.

The load averages before and after each run are recorded: the machine may be shared. With
``--repeats n`` the two tools run n times each, alternating (A B B A ...), so that a change of
load over time affects both alike; the summary gives medians over the runs.

    python bench/train_compare.py                      # data in /work/shared/data
    python bench/train_compare.py /path/to/data --epochs 6 --threads 2 --out bench/results/train_compare_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib.metadata
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("torchmd-train", "fastnnp")


def make_config(data: Path, epochs: int, log_dir: Path, path: Path) -> None:
    """The reference config with absolute data paths, the shared splits and ``epochs`` epochs."""
    reference = data / "torchmdnet-3.1.0" / "tensornet"
    config = yaml.safe_load((reference / "input.yaml").read_text())
    for key in ("coord_files", "embed_files", "energy_files", "force_files"):
        config[key] = str(data / config[key])
    config.update(splits=str(reference / "splits.npz"), num_epochs=epochs, log_dir=str(log_dir))
    path.write_text(yaml.safe_dump(config))


def run_tool(tool: str, config: Path, log_dir: Path, threads: int) -> dict:
    """Run one training process; returns its wall time, load averages and per-epoch checkpoint times."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    if tool == "torchmd-train":
        command = ["torchmd-train", "--conf", str(config)]
    else:
        command = [sys.executable, "-m", "fastnnp.training.cli", str(config), "--no-progress"]
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    start = time.time()
    with open(log_dir / "stdout.txt", "w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log_dir, check=True)
    wall = time.time() - start
    snapshots = sorted(glob.glob(str(log_dir / "epoch=*.ckpt")), key=lambda p: int(re.search(r"epoch=(\d+)", p)[1]))
    stamps = [os.path.getmtime(p) for p in snapshots]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "command": " ".join(command),
        "wall_s": wall,
        "first_epoch_end_s": stamps[0] - start if stamps else None,
        "epoch_intervals_s": intervals,
        "epoch_s_median": statistics.median(intervals) if intervals else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def best_checkpoint(tool: str, log_dir: Path) -> Path:
    """The checkpoint the tool itself tests: fastnnp's best.ckpt, TorchMD-Net's lowest val loss."""
    if tool == "fastnnp":
        return log_dir / "best.ckpt"
    candidates = glob.glob(str(log_dir / "epoch=*-val_loss=*.ckpt"))
    return Path(min(candidates, key=lambda p: float(re.search(r"val_loss=([0-9.]+)", p)[1])))


def own_report(tool: str, log_dir: Path) -> dict:
    """Test losses as the tool reports them (TorchMD-Net: means over test batches)."""
    if tool == "fastnnp":
        return json.loads((log_dir / "test_metrics.json").read_text())
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    final = [r for r in rows if r.get("test_neg_dy_l1_loss") and not r.get("train_total_mse_loss")][-1]
    return {k: float(v) for k, v in final.items() if k.startswith("test_") and v}


def test_errors(checkpoint: Path, config: Path) -> dict:
    """Exact MAE/RMSE over the test split of energy (eV per molecule) and forces (eV/Å per component)."""
    import torch

    import fastnnp
    from fastnnp.training.config import load_config
    from fastnnp.training.data import collate, load_frames

    settings = load_config(config)
    frames = load_frames(settings)
    test = [frames[i] for i in np.load(settings["splits"])["idx_test"]]
    model = fastnnp.load_model(str(checkpoint), backend="torch")
    energy_err, force_err = [], []
    for start in range(0, len(test), 64):
        batch = collate(test[start:start + 64], torch.float32)
        energy, forces = model(batch.z, batch.pos, batch.batch)
        energy_err.append((energy.detach().double() - batch.energy.double()).flatten())
        force_err.append((forces.detach().double() - batch.forces.double()).flatten())
    e, f = torch.cat(energy_err), torch.cat(force_err)
    return {
        "energy_mae": e.abs().mean().item(), "energy_rmse": e.square().mean().sqrt().item(),
        "forces_mae": f.abs().mean().item(), "forces_rmse": f.square().mean().sqrt().item(),
    }


def environment(threads: int) -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {
        "device": "cpu",
        "device_name": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in ("torch", "torchmd-net", "lightning", "fastnnp")},
        "torch_threads_default": torch.get_num_threads(),
        "commit": commit + ("+uncommitted changes" if dirty else ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", default="/work/shared/data", type=Path, help="folder with xtb-molecules/")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool, alternating A B B A ...")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs write (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_compare_cpu.json")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="train_compare_"))
    workdir.mkdir(parents=True, exist_ok=True)
    order = [tool for r in range(args.repeats) for tool in (TOOLS if r % 2 == 0 else TOOLS[::-1])]
    results: dict[str, list[dict]] = {tool: [] for tool in TOOLS}
    for run, tool in enumerate(order):
        log_dir = workdir / f"{run}-{tool}"
        config = workdir / f"{run}-{tool}.yaml"
        make_config(args.data.resolve(), args.epochs, log_dir, config)
        print(f"{tool}: training {args.epochs} epochs in {log_dir}", flush=True)
        timing = run_tool(tool, config, log_dir, args.threads)
        checkpoint = best_checkpoint(tool, log_dir)
        results[tool].append({
            **timing,
            "best_checkpoint": checkpoint.name,
            "test": test_errors(checkpoint, config),
            "own_test_report": own_report(tool, log_dir),
        })
        print(json.dumps({k: results[tool][-1][k] for k in ("epoch_s_median", "wall_s", "test")}), flush=True)

    def median(tool: str, *path: str) -> float:
        values = []
        for result in results[tool]:
            for key in path:
                result = result[key]
            values.append(result)
        return statistics.median(values)

    epoch_s = {tool: median(tool, "epoch_s_median") for tool in TOOLS}
    forces = {tool: median(tool, "test", "forces_mae") for tool in TOOLS}
    report = {
        "benchmark": "torchmd-train vs fastnnp train: TensorNet F=64 L=2 cutoff 4.5 Å on xtb-molecules, same config, "
                     "splits and epochs, one process each",
        **environment(args.threads),
        "settings": {"epochs": args.epochs, "order": order,
                     "config": str(args.data / "torchmdnet-3.1.0" / "tensornet" / "input.yaml")},
        "results": results,
        "summary": {
            "epoch_s_median": epoch_s,
            "wall_s_median": {tool: median(tool, "wall_s") for tool in TOOLS},
            "speedup_per_epoch": epoch_s["torchmd-train"] / epoch_s["fastnnp"],
            "test_forces_mae": forces,
            "test_energy_mae": {tool: median(tool, "test", "energy_mae") for tool in TOOLS},
            "forces_mae_ratio": forces["fastnnp"] / forces["torchmd-train"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
