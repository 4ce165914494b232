"""Where the Triton kernels can run: the CPU interpreter switch and the device check
(importable without Triton installed)."""

import os

import torch


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_triton_device(device: torch.device) -> None:
    """Refuse devices the kernels cannot run on (CPU works only under the interpreter)."""
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return
    raise ValueError(
        f"backend='triton' needs a CUDA device, got {device}; set TRITON_INTERPRET=1 before importing "
        "fastnnp to run the kernels on CPU (slowly), or use backend='torch'"
    )
