"""``fastnnp train cfg.yaml [--resume] [--key value ...]``: train with a torchmd-train config.

Runs in one process, or in several under ``torchrun`` (e.g.
``torchrun --nproc_per_node 2 -m fastnnp.training.cli cfg.yaml``).

Exit status: 0 after training and testing; 2 for a mistake in the command, the config, its
files or ``log_dir`` (one line ``fastnnp train: error: ...`` on stderr, no traceback); 1 when
training diverged (:class:`~fastnnp.training.trainer.TrainingDiverged`). Anything else is a
bug and keeps its traceback. Warnings are one line each, ``fastnnp train: warning: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from typing import Iterator, NoReturn, Optional, Sequence

from .config import load_config
from .trainer import TrainingDiverged, train

PROG = "fastnnp train"
USAGE_ERROR, DIVERGED = 2, 1
# What a user's mistake raises: a bad value or file (ValueError, CheckpointError among them) and
# files or folders that cannot be opened (OSError: missing, permissions, not a folder, ...).
USER_ERRORS = (ValueError, OSError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train a TorchMD-Net model (TensorNet, TensorNet2, ET, GN) from a torchmd-train YAML config. "
        "Any torchmd-train key can be overridden as --key value (e.g. --num-epochs 10).",
    )
    parser.add_argument("config", help="torchmd-train YAML config (relative paths in it are relative to its folder)")
    parser.add_argument("--resume", action="store_true", help="continue from log_dir/last.ckpt after an interruption")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def _one_line(error: BaseException) -> str:
    """The error's message on one line (an OSError from the system: its file and reason)."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings as ``fastnnp train: warning: message`` (no file, line or source)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), train, and return the exit status."""
    try:
        args, overrides = _parser().parse_known_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed
        return int(done.code or 0)
    with _one_line_warnings():
        try:
            config = load_config(args.config, overrides)
            if os.environ.get("RANK", "0") == "0":
                print(f"{PROG}: writing to {os.path.abspath(config['log_dir'])}", flush=True)
            train(config, resume=args.resume, progress=not args.no_progress)
        except TrainingDiverged as error:
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
            return DIVERGED
        except USER_ERRORS as error:
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
            return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
