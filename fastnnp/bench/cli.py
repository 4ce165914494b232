"""Command line of ``python -m fastnnp.bench`` (also ``fastnnp bench``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import backends, systems
from .models import PRESETS

CPU_SYSTEMS = ("droplet-22", "droplet-100", "droplet-1000", "water-1000", "water-3000", "water-10000", "cu-500",
               "ethanols-576")
CUDA_SYSTEMS = ("droplet-22", "droplet-100", "droplet-1000", "water-1000", "water-10000", "water-100000",
                "water-1000000", "water-2000000", "water-4000000", "cu-4000", "ethanols-576", "ethanols-9216")
QUICK_SYSTEMS = ("droplet-22", "water-1000", "cu-256", "ethanols-288")
# (warm-up calls, timed calls at most, seconds of timed calls after which to stop, timeout per row s)
SETTINGS = {"quick": (1, 5, 1.0, 120.0), "cpu": (2, 30, 5.0, 900.0), "cuda": (5, 100, 5.0, 300.0)}
QUICK_BUDGET_S = 240.0  # --quick: rows not started after this many seconds are skipped (and reported)

EPILOG = f"""\
systems (FAMILY-ATOMS, rounded to whole molecules or cells; results carry the real count):
  droplet-N   open-boundary water cluster (stands in for a molecule of N atoms)
  water-N     periodic liquid water box
  cu-N        periodic fcc copper, 4k^3 atoms
  ethanols-N  a batch of N/9 separate ethanol molecules in one call
  defaults: CPU {' '.join(CPU_SYSTEMS)}
            CUDA {' '.join(CUDA_SYSTEMS)}
            --quick {' '.join(QUICK_SYSTEMS)}
backends:{backends.__doc__.split(chr(10), 1)[1]}
"""


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parse and complete the options (device-dependent defaults filled in)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m fastnnp.bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Throughput of fastnnp's backends and TorchMD-Net's, side by side, on the same model and inputs.")
    parser.add_argument("--quick", action="store_true", help="a few systems up to ~1000 atoms, few repetitions")
    parser.add_argument("--model", default="tensornet-128",
                        help=f"a preset ({', '.join(PRESETS)}; random weights) or a TorchMD-Net checkpoint")
    parser.add_argument("--systems", nargs="+", metavar="FAMILY-ATOMS", help="systems to run, in this order")
    parser.add_argument("--backends", nargs="+", choices=backends.BACKENDS, metavar="BACKEND",
                        help=f"default: all but the opt-in {', '.join(backends.OPT_IN)} (on CPU also the CUDA-only)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--warmup", type=int, help="untimed calls after the first")
    parser.add_argument("--repeats", type=int, help="timed calls per row, at most")
    parser.add_argument("--target-s", type=float, help="stop timing a row after this many seconds (>= 3 calls)")
    parser.add_argument("--timeout-s", type=float, help="per row (one subprocess)")
    parser.add_argument("--budget-s", type=float,
                        help=f"whole run: rows not started by then are skipped (--quick: {QUICK_BUDGET_S:g})")
    parser.add_argument("--threads", type=int,
                        help="torch threads per row (default torch's: one per core); 1 is steadier on a busy machine")
    parser.add_argument("--allow-skips", action="store_true",
                        help="exit 0 even when rows were skipped or timed out for lack of time")
    parser.add_argument("--memory-limit-gib", type=float,
                        help="CPU: address-space cap per row (default 80%% of this machine's memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    parser.add_argument("--output", default="fastnnp-bench", metavar="DIR", help="where the outputs go")
    parser.add_argument("--name", default="bench", help="outputs are DIR/NAME.json, .md and .png")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join the JSON of split runs; measure nothing")
    args = parser.parse_args(argv)
    for request in args.systems or ():
        try:
            systems.parse(request)
        except ValueError as error:
            parser.error(str(error))
    return complete(args, parser)


def complete(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill in device-, quick- and machine-dependent defaults."""
    import psutil
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.systems is None:
        args.systems = list(QUICK_SYSTEMS if args.quick else CPU_SYSTEMS if args.device == "cpu" else CUDA_SYSTEMS)
    args.backends = backends.run_order(args.backends or backends.default_backends(args.device))
    warmup, repeats, target_s, timeout_s = SETTINGS["quick" if args.quick else args.device]
    args.warmup = warmup if args.warmup is None else args.warmup
    args.repeats = repeats if args.repeats is None else args.repeats
    args.target_s = target_s if args.target_s is None else args.target_s
    args.timeout_s = timeout_s if args.timeout_s is None else args.timeout_s
    if args.quick and args.budget_s is None:
        args.budget_s = QUICK_BUDGET_S
    if args.memory_limit_gib is None:
        args.memory_limit_gib = round(0.8 * psutil.virtual_memory().total / 2**30, 1)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


USAGE_ERROR, NOT_MEASURED = 2, 1  # exit statuses: bad input; rows that failed or ran out of time


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run (or merge), write DIR/NAME.{json,md,png}, print the table.

    Exit status 0; 1 when a row failed or disagreed with the reference, or (unless
    ``--allow-skips``) was skipped or timed out for lack of time (:data:`.runner.UNMEASURED`),
    the rows named on stderr; 2 for bad input (a missing checkpoint, an unreadable JSON to
    merge, an unwritable output folder), one line, no traceback.
    """
    from .report import save_json, table, write_outputs
    from .runner import merge, run, unmeasured

    args = parse_args(argv, prog)
    name = prog or "python -m fastnnp.bench"
    json_path = os.path.join(args.output, f"{args.name}.json")
    try:
        report = merge(args.merge) if args.merge else run(args, lambda partial: save_json(partial, json_path))
        paths = write_outputs(report, args.output, args.name)
    except (OSError, ValueError) as error:  # CheckpointError and json's errors are ValueErrors
        print(f"{name}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return USAGE_ERROR
    print("\n" + table(report) + "\n\nwritten: " + ", ".join(paths))
    kinds = unmeasured(report)
    failing = kinds.get("error", []) + ([] if args.allow_skips else kinds.get("incomplete", []))
    if failing:
        rows = "; ".join(f"{row['system']} {row['backend']}: {row['status']}" for row in failing)
        hint = " (--allow-skips accepts rows skipped or timed out for lack of time)" if kinds.get("incomplete") else ""
        print(f"{name}: {len(failing)} of {len(report['results'])} rows not measured: {rows}{hint}", file=sys.stderr)
        return NOT_MEASURED
    return 0
