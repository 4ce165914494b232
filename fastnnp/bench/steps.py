"""Build each backend's timed callable: one energy + forces evaluation of a fixed input.

Runs inside the worker subprocess. TorchMD-Net is imported here only, and only when one of
its rows runs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from .backends import FASTNNP, GRAPHED, TF32
from .torchmdnet_pure import PureTorch

Step = Callable[[], tuple[torch.Tensor, torch.Tensor]]
TORCHMDNET_GRAPH_WARMUP = 12  # TorchMD-Net External's cuda_graph_warmup_steps
GRAPH_WARMUP_S = 10.0  # graph capture warm-up stops after this long (at least 2 calls)


class Inputs(NamedTuple):
    """One system on the device: z [N] int64, pos [N, 3] Å, batch [N] int64, box [3, 3] Å or None."""

    z: torch.Tensor
    pos: torch.Tensor
    batch: torch.Tensor
    box: torch.Tensor | None


def static_max_neighbors(n_atoms: int, n_edges: int) -> int:
    """TorchMD-Net's ``max_num_neighbors`` for static shapes, which pads its pair list to
    ``max_num_neighbors * N`` pairs (self loops included): the mean count + 5 %, rounded up
    to a multiple of 8."""
    return 8 * math.ceil(1.05 * (n_edges + n_atoms) / n_atoms / 8)


def prepare(backend: str, checkpoint: str, inputs: Inputs, dtype: torch.dtype, static_neighbors: int,
            dynamic_neighbors: int) -> Step:
    """The callable of ``backend`` (model loaded; graph captured or compilation set up).

    TorchMD-Net's rows get ``max_num_neighbors`` = ``static_neighbors`` with static shapes
    (:func:`static_max_neighbors`), else ``dynamic_neighbors`` (its pair-list capacity per atom).
    """
    if backend.startswith("fastnnp-"):
        from ..loading import load_model

        model = load_model(checkpoint, device=inputs.pos.device, dtype=dtype, **FASTNNP[backend])
        if backend in TF32:
            set_tf32(model)
        if backend in GRAPHED:
            return fastnnp_graph_step(model, inputs)
        if backend == "fastnnp-triton-compile":
            return eager_step(torch.compile(model, dynamic=False), inputs)
        return eager_step(model, inputs)
    if backend == "torchmdnet-static-compile":
        return torchmdnet_compile_step(checkpoint, inputs, dtype, static_neighbors)
    if backend == "torchmdnet-static-graph":
        model = torchmdnet_model(checkpoint, inputs, dtype, static_shapes=True, max_num_neighbors=static_neighbors)
        return graph_step(model, inputs, warmup=TORCHMDNET_GRAPH_WARMUP)
    model = torchmdnet_model(checkpoint, inputs, dtype, max_num_neighbors=dynamic_neighbors)
    return eager_step(PureTorch(model) if backend == "torchmdnet-pure" else model, inputs)


def set_tf32(model: torch.nn.Module) -> None:
    """Run the Triton representation's radial-MLP ``tl.dot`` in TF32 (its ``precision``;
    :func:`fastnnp.load_model` has no such argument). A model without the setting is refused."""
    representation = model.representation_model
    if not hasattr(representation, "precision"):
        raise ValueError(f"{type(representation).__name__} has no TF32 setting (precision): only TensorNet's and "
                         "TensorNet2's Triton kernels have one")
    representation.precision = "tf32"


def eager_step(model: torch.nn.Module, inputs: Inputs) -> Step:
    return lambda: model(inputs.z, inputs.pos, inputs.batch, box=inputs.box)


def fastnnp_graph_step(model: torch.nn.Module, inputs: Inputs) -> Step:
    """The calculator's CUDA-graph step (:class:`fastnnp.step.GraphedStep`): validated once,
    captured after a warm-up, each call copies the positions in and replays."""
    from ..step import EnergyStep, GraphedStep

    graphed = GraphedStep(EnergyStep(model, inputs.z, inputs.pos, inputs.batch, inputs.box))

    def step():
        result = graphed.run(inputs.pos, inputs.box)
        return result.energy, result.forces

    return step


def graph_step(model: torch.nn.Module, inputs: Inputs, warmup: int) -> Step:
    """One energy + forces call captured as a CUDA graph, as TorchMD-Net's External calculator
    does it: ``warmup`` calls on a side stream (fewer after GRAPH_WARMUP_S, at least 2), then
    capture; each step copies the positions into the captured input and replays."""
    static_pos = inputs.pos.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    start = time.perf_counter()
    with torch.cuda.stream(stream):
        for call in range(warmup):
            model(inputs.z, static_pos, inputs.batch, box=inputs.box)
            if call >= 1 and time.perf_counter() - start > GRAPH_WARMUP_S:
                break
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        energy, forces = model(inputs.z, static_pos, inputs.batch, box=inputs.box)

    def step():
        with torch.no_grad():
            static_pos.copy_(inputs.pos)
        graph.replay()
        return energy, forces

    return step


def torchmdnet_model(checkpoint: str, inputs: Inputs, dtype: torch.dtype, **overrides) -> torch.nn.Module:
    """TorchMD-Net's ``load_model(checkpoint, derivative=True, **overrides)`` on the device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchmdnet.models.model import load_model

    overrides.setdefault("derivative", True)
    precision = 64 if dtype == torch.float64 else 32
    return load_model(checkpoint, device=inputs.pos.device, precision=precision, **overrides).eval()


def torchmdnet_compile_step(checkpoint: str, inputs: Inputs, dtype: torch.dtype, max_neighbors: int) -> Step:
    """TorchMD-Net's ASE calculator with compile=True: static shapes, energy-only model under
    torch.compile(inductor, dynamic=False, fullgraph=True, reduce-overhead), forces by backward."""
    model = torchmdnet_model(checkpoint, inputs, dtype, static_shapes=True, max_num_neighbors=max_neighbors,
                             derivative=False).requires_grad_(False)
    with torch.no_grad():  # the calculator's warm-up: fixes the output module's dim_size
        model(inputs.z, inputs.pos, inputs.batch, box=inputs.box)
    compiled = torch.compile(model, backend="inductor", dynamic=False, fullgraph=True, mode="reduce-overhead")

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        pos = inputs.pos.detach().clone().requires_grad_(True)
        energy, _ = compiled(inputs.z, pos, inputs.batch, box=inputs.box)
        energy.sum().backward()
        return energy.detach(), -pos.grad

    return step
