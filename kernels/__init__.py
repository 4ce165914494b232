"""Triton kernels for fastnnp, shipped as ``fastnnp.kernels``."""
