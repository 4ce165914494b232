"""Triton kernels for fastnnp, shipped as ``fastnnp.kernels``."""

import os


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
