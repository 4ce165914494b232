"""Helpers the tests share: tolerances against TorchMD-Net, small systems, tiny training configs."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
