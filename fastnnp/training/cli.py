"""``fastnnp train cfg.yaml [--resume] [--key value ...]``: train with a torchmd-train config.

Runs in one process, or in several under ``torchrun`` (e.g.
``torchrun --nproc_per_node 2 -m fastnnp.training.cli cfg.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .config import load_config
from .trainer import train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastnnp train",
        description="Train a TorchMD-Net model (TensorNet, ET, GN) from a torchmd-train YAML config. "
        "Any torchmd-train key can be overridden as --key value (e.g. --num-epochs 10).",
    )
    parser.add_argument("config", help="torchmd-train YAML config (relative paths in it are relative to its folder)")
    parser.add_argument("--resume", action="store_true", help="continue from log_dir/last.ckpt after an interruption")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), train, and return the exit status."""
    args, overrides = _parser().parse_known_args(argv)
    try:
        config = load_config(args.config, overrides)
        train(config, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as error:
        print(f"fastnnp train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
