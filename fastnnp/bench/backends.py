"""The benchmarked backends (one table row each per system) and which of them can run here.

  fastnnp-triton             fastnnp, backend="triton": fused Triton kernels, eager calls (radial tables)
  fastnnp-triton-exact       the same with radial="exact": the radial MLPs run in the kernels
  fastnnp-triton-graph       the same, one energy+forces call captured as a CUDA graph
  fastnnp-triton-compile     the same under torch.compile(dynamic=False)                  (opt-in)
  fastnnp-triton-exact-graph fastnnp-triton-exact's call captured as a CUDA graph         (opt-in)
  fastnnp-triton-exact-tf32  fastnnp-triton-exact with the radial-MLP kernels' tl.dot in TF32
                             (precision="tf32"; TensorNet, TensorNet2), checked at rtol 1e-2
                             (metrics.BACKEND_RTOL), not float32's 1e-4                   (opt-in)
  fastnnp-triton-exact-tf32-graph  the same captured as a CUDA graph                      (opt-in)
  fastnnp-torch              fastnnp's pure-torch path (radial tables in float32)
  fastnnp-torch-exact        the same with radial="exact": the reference semantics
  torchmdnet                 TorchMD-Net as its load_model returns it (Warp kernels, dynamic shapes)
  torchmdnet-static-graph    static_shapes=True, captured once and replayed as a CUDA graph, as
                             its External calculator (use_cuda_graph=True) does
  torchmdnet-static-compile  static_shapes=True, energy-only model under torch.compile(inductor,
                             fullgraph, reduce-overhead) + backward, as its ASE calculator
                             (compile=True) does                                          (opt-in)
  torchmdnet-pure            TorchMD-Net's pure-torch TensorNet (Warp kernels switched off)
"""

from __future__ import annotations

import importlib.util

import torch

from ..models import registry

BACKENDS = (
    "fastnnp-triton", "fastnnp-triton-exact", "fastnnp-triton-graph", "fastnnp-triton-compile",
    "fastnnp-triton-exact-graph", "fastnnp-triton-exact-tf32", "fastnnp-triton-exact-tf32-graph", "fastnnp-torch",
    "fastnnp-torch-exact", "torchmdnet", "torchmdnet-static-graph", "torchmdnet-static-compile", "torchmdnet-pure",
)
OPT_IN = ("fastnnp-triton-compile", "fastnnp-triton-exact-graph", "fastnnp-triton-exact-tf32",
          "fastnnp-triton-exact-tf32-graph", "torchmdnet-static-compile")
CUDA_ONLY = ("fastnnp-triton-graph", "fastnnp-triton-compile", "fastnnp-triton-exact-graph", "fastnnp-triton-exact-tf32",
             "fastnnp-triton-exact-tf32-graph", "torchmdnet-static-graph", "torchmdnet-static-compile")
TRITON = ("fastnnp-triton", "fastnnp-triton-exact", "fastnnp-triton-graph", "fastnnp-triton-compile",
          "fastnnp-triton-exact-graph", "fastnnp-triton-exact-tf32", "fastnnp-triton-exact-tf32-graph")
# fastnnp's rows whose energy + forces call is captured as a CUDA graph (steps.fastnnp_graph_step).
GRAPHED = ("fastnnp-triton-graph", "fastnnp-triton-exact-graph", "fastnnp-triton-exact-tf32-graph")
# Rows whose radial-MLP kernels run tl.dot in TF32 (the Triton representation's ``precision``,
# which only TensorNet's and TensorNet2's have; torch's own matmuls stay float32 in every row).
TF32 = ("fastnnp-triton-exact-tf32", "fastnnp-triton-exact-tf32-graph")
TF32_MODELS = ("tensornet", "tensornet2")
# load_model arguments of fastnnp's rows.
FASTNNP = {
    "fastnnp-triton": dict(backend="triton"),
    "fastnnp-triton-exact": dict(backend="triton", radial="exact"),
    "fastnnp-triton-graph": dict(backend="triton"),
    "fastnnp-triton-compile": dict(backend="triton"),
    "fastnnp-triton-exact-graph": dict(backend="triton", radial="exact"),
    "fastnnp-triton-exact-tf32": dict(backend="triton", radial="exact"),
    "fastnnp-triton-exact-tf32-graph": dict(backend="triton", radial="exact"),
    "fastnnp-torch": dict(backend="torch"),
    "fastnnp-torch-exact": dict(backend="torch", radial="exact"),
}
TORCHMDNET = ("torchmdnet", "torchmdnet-static-graph", "torchmdnet-static-compile", "torchmdnet-pure")
# Whose energy and forces every other row of a system must reproduce before it is timed:
# the first of these that ran (fastnnp's reference path is itself tested against TorchMD-Net).
REFERENCES = ("fastnnp-torch-exact", "fastnnp-torch", "torchmdnet-pure", "torchmdnet")


def default_backends(device: str) -> list[str]:
    """Every backend that is not opt-in; on CPU only those that can run there, fastnnp-triton included
    (its row then says why it did not run)."""
    chosen = [b for b in BACKENDS if b not in OPT_IN]
    return chosen if device == "cuda" else [b for b in chosen if b not in CUDA_ONLY]


def run_order(backends: list[str]) -> list[str]:
    """References first (in :data:`REFERENCES` order), then the rest in :data:`BACKENDS` order."""
    first = [b for b in REFERENCES if b in backends]
    return first + [b for b in BACKENDS if b in backends and b not in first]


def unavailable(backend: str, device: str, dtype: str, hparams: dict, interpreting: bool) -> str | None:
    """Why ``backend`` cannot run in this configuration, or None when it can."""
    if backend in CUDA_ONLY and device != "cuda":
        return "needs CUDA"
    if backend in TF32 and hparams["model"] not in TF32_MODELS:
        return f"TF32 applies to the radial-MLP kernels of {' and '.join(TF32_MODELS)} only, not {hparams['model']}"
    if backend in TRITON:
        return registry.unsupported(hparams["model"], "triton", hparams, getattr(torch, dtype), device, interpreting)
    if backend in TORCHMDNET and importlib.util.find_spec("torchmdnet") is None:
        return "torchmd-net is not installed (pip install 'fastnnp[torchmdnet]')"
    if backend == "torchmdnet-pure" and hparams["model"] != "tensornet":
        return "same as torchmdnet for models other than TensorNet"
    return None
