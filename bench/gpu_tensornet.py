"""GPU speed, memory and parity of fastnnp's TensorNet beside TorchMD-Net 3.1, in one run.

TensorNet (F=128, 2 layers, 32 expnorm rbf, cutoff 5 Å, the HPARAMS of cpu_reference.py,
random weights seeded once and shared by every backend) energy + forces, fp32, on periodic
water boxes (``--sizes``, atoms) and open-boundary water droplets (``--molecules``, atoms;
both rounded to whole molecules, so ``water-1000`` has 999 atoms and ``droplet-22`` 21: the
names carry the requested size, the rows the real one). The run also measures

* parity: ``tests/data/tensornet/model.ckpt`` against TorchMD-Net's own stored outputs
  (``reference.npz``) with the tolerances of tests/parity.py, for fastnnp-triton and
  fastnnp-torch on the device;
* the device ceilings: copy bandwidth, fp32 (IEEE) and tf32 matmul rates, launch latency;
* a work model (:func:`tensornet_work`) giving each system's FLOPs, compulsory bytes and
  the floor time max(bytes / bandwidth, FLOPs / fp32 rate) that every row is set against.

Every ceiling, parity check, system count and (backend, system) timing runs in its own
subprocess with a timeout, so an out-of-memory error, a crash or a hang is recorded, not
fatal. Each row's energy (and forces) is compared with fastnnp-torch's (or, where that
failed, TorchMD-Net's) before its timing is reported; a row that disagrees is still timed
and is flagged. The JSON is rewritten after every subprocess, so a run cut short keeps
what it measured.

    python3 bench/gpu_tensornet.py --out bench/results/gpu_tensornet_h100.json
    python3 bench/gpu_tensornet.py --sizes 1000 10000 --molecules 22 --backends fastnnp-triton torchmdnet
    python3 bench/gpu_tensornet.py --device cpu --quick                 # smoke test
    python3 bench/gpu_tensornet.py --merge a.json b.json --out all.json  # join split runs

Backends (rows):
  fastnnp-triton             fastnnp, backend="triton", eager calls
  fastnnp-triton-graph       the same, one forward+backward captured as a torch.cuda.CUDAGraph
  fastnnp-triton-compile     the same under torch.compile(dynamic=False)          (opt-in)
  fastnnp-torch              fastnnp's pure-torch reference path on the device
  torchmdnet                 TorchMD-Net 3.1 as loaded by default (Warp kernels, dynamic shapes)
  torchmdnet-static-graph    static_shapes=True, captured once and replayed as a CUDA graph,
                             as its External calculator (use_cuda_graph=True) does
  torchmdnet-static-compile  static_shapes=True, derivative=False, torch.compile(inductor,
                             fullgraph, reduce-overhead) + backward, as its ASE calculator
                             (compile=True) does                                 (opt-in)
  torchmdnet-pure            TorchMD-Net's pure-torch TensorNet (the tests' oracle)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "bench"), os.path.join(REPO, "tests")]

# cpu_reference.py's model (TensorNet F=128, L=2, 32 expnorm rbf), cutoff 5 Å; max_z 32 covers H, C, N, O.
HPARAMS = dict(importlib.import_module("cpu_reference").HPARAMS, cutoff_upper=5.0, max_z=32)
BACKENDS = (
    "fastnnp-triton", "fastnnp-triton-graph", "fastnnp-triton-compile", "fastnnp-torch",
    "torchmdnet", "torchmdnet-static-graph", "torchmdnet-static-compile", "torchmdnet-pure",
)
# The order rows run in: the ones that matter most first, in case the time budget runs out.
RUN_ORDER = (
    "fastnnp-triton", "fastnnp-torch", "torchmdnet-static-graph", "torchmdnet", "fastnnp-triton-graph",
    "torchmdnet-static-compile", "fastnnp-triton-compile", "torchmdnet-pure",
)
OPT_IN = ("fastnnp-triton-compile", "torchmdnet-static-compile")
CUDA_ONLY = ("fastnnp-triton-graph", "fastnnp-triton-compile", "torchmdnet-static-graph", "torchmdnet-static-compile")
TORCHMDNET_MODES = ("torchmdnet", "torchmdnet-static-graph", "torchmdnet-static-compile", "torchmdnet-pure")
# Whose energy every other row is checked against: the first of these that produced one.
REFERENCES = ("fastnnp-torch", "torchmdnet-pure", "torchmdnet")
ENERGY_RTOL = 1e-4  # |ΔE| <= 1e-4·max(1, |E_ref|), fp32
FORCE_RTOL = 1e-4  # max|ΔF| <= 1e-4·max(1, max|F_ref|), fp32
TMD_GRAPH_WARMUP = 12  # warm-up calls before capture (at most), TorchMD-Net External's cuda_graph_warmup_steps
CHECKPOINT_DIR = os.path.join(REPO, "tests", "data", "tensornet")
RESULT_TAG = "@@RESULT "

Step = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class Inputs(NamedTuple):
    """One system on the device: z [N] int64, pos [N, 3] fp32 Å, batch [N] int64, box [3, 3] Å or None."""

    z: torch.Tensor
    pos: torch.Tensor
    batch: torch.Tensor
    box: torch.Tensor | None


# --------------------------------------------------------------------------------------
# work model


def tensornet_work(
    n_atoms: int, n_edges: int, channels: int = 128, num_rbf: int = 32, num_layers: int = 2, float_bytes: int = 4
) -> dict:
    """FLOPs and compulsory memory traffic of one TensorNet energy + forces evaluation.

    ``n_edges`` counts directed edges (both directions of every pair within the cutoff, no
    self loops), as fastnnp's neighbour list returns them. A multiply-add is 2 FLOPs.

    Forward FLOPs, F channels, R radial functions, L layers:

    * per edge, embedding: the three distance projections R -> F, 2·3RF, and the edge's
      I/A/S contribution, 2·10F (the per-edge ``emb2`` Linear(2F, F) of the atomic numbers is
      not counted: it depends on the species pair only and is tabulated per pair);
    * per edge per layer: the radial MLP R -> F -> 2F -> 3F, 2(RF + 2F² + 6F²), and the
      message (the nine tensor components scaled by three radial factors and summed),
      2·10F;
    * per atom: embedding MLP F -> 2F -> 3F and three channel-mixing F x F linears over the
      9 tensor components (16F² + 18F²); per layer six such linears (36F²) plus the two 3x3
      matrix products, norms and decomposition (~150F); output norm, Linear(3F, F) and
      the head F -> F/2 -> 1 (7F² + 50F).

    The backward pass (forces) is taken as 2x the forward, so energy + forces = 3x forward.
    The radial MLP is a function of the distance alone: an implementation that tabulates it
    does less arithmetic than this model counts (``flops_radial_mlp`` says how much).

    Compulsory DRAM bytes (each datum moved once per pass, neighbours' tensors gathered
    through cache, nothing per edge materialised):

    * per atom per layer: the 9F-float tensor state read or written 4 times in the forward
      (read X, write Y, gather Y, write the message sum) and 8 times in the backward; the
      embedding and the output add 1 + 2 accesses each; plus positions in and forces out
      (24 B);
    * per edge: a 4-byte sender index, a 4-byte packed periodic image and the 12-byte
      edge vector, streamed once per layer (embedding included) forward and backward:
      20 B x 2(L + 1).

    Returns a dict: ``flops``, ``flops_radial_mlp``, ``bytes`` (per evaluation) and the
    per-part terms.
    """
    f, r, layers = channels, num_rbf, num_layers
    radial_mlp = 2 * (r * f + 2 * f * f + 6 * f * f)
    edge_forward = 2 * 3 * r * f + 2 * 10 * f + layers * (radial_mlp + 2 * 10 * f)
    atom_forward = 34 * f * f + layers * (36 * f * f + 150 * f) + 7 * f * f + 50 * f
    atom_bytes = 9 * f * float_bytes * (12 * layers + 6) + 24
    edge_bytes = 20 * 2 * (layers + 1)
    return {
        "flops": 3 * (n_edges * edge_forward + n_atoms * atom_forward),
        "flops_radial_mlp": 3 * n_edges * layers * radial_mlp,
        "bytes": n_atoms * atom_bytes + n_edges * edge_bytes,
        "flops_per_edge": 3 * edge_forward, "flops_per_atom": 3 * atom_forward,
        "bytes_per_atom": atom_bytes, "bytes_per_edge": edge_bytes,
    }


def floor_time(work: dict, ceilings: dict) -> dict:
    """Lower bounds in seconds: memory (bytes / copy bandwidth), compute (FLOPs / fp32 mm rate)."""
    memory_s = work["bytes"] / (ceilings["copy_gbps"] * 1e9)
    compute_s = work["flops"] / (ceilings["fp32_tflops"] * 1e12)
    no_mlp_s = max(memory_s, (work["flops"] - work["flops_radial_mlp"]) / (ceilings["fp32_tflops"] * 1e12))
    return {"floor_s": max(memory_s, compute_s), "memory_floor_s": memory_s, "compute_floor_s": compute_s,
            "floor_without_radial_mlp_s": no_mlp_s}


# --------------------------------------------------------------------------------------
# systems


def _import_fastnnp() -> None:
    """Make ``fastnnp`` importable from this checkout, ``fastnnp.kernels`` included.

    pyproject maps ``fastnnp.kernels`` to the top-level ``kernels/`` folder; an installed
    fastnnp has it, a checkout on ``sys.path`` does not, so the mapping is mirrored here.
    """
    import fastnnp

    if importlib.util.find_spec("fastnnp.kernels") is None and os.path.isdir(os.path.join(REPO, "kernels")):
        fastnnp.__path__.append(REPO)


def water_droplet(n_atoms: int, seed: int = 0):
    """An open-boundary droplet of round(n_atoms / 3) water molecules (ase.Atoms, no cell).

    The molecules are those nearest the centre of a liquid-density periodic water box
    (``fastnnp.systems.water_box``) holding eight times as many, so the droplet is compact.
    """
    from ase import Atoms

    from fastnnp.systems import water_box

    n_mol = max(1, round(n_atoms / 3))
    box = water_box(3 * 8 * n_mol, seed=seed)
    molecules = box.positions.reshape(-1, 3, 3)
    distance = np.linalg.norm(molecules.mean(1) - box.cell.array.diagonal() / 2, axis=1)
    keep = np.sort(np.argsort(distance)[:n_mol])
    return Atoms(numbers=box.numbers.reshape(-1, 3)[keep].ravel(), positions=molecules[keep].reshape(-1, 3))


def build_system(name: str):
    """``water-N``: periodic water box of about N atoms; ``droplet-N``: open-boundary droplet."""
    _import_fastnnp()
    from fastnnp.systems import water_box

    kind, size = name.rsplit("-", 1)
    if kind == "water":
        return water_box(int(size), seed=0)
    if kind == "droplet":
        return water_droplet(int(size), seed=0)
    raise ValueError(f"unknown system {name!r}")


def system_inputs(name: str, device: torch.device) -> Inputs:
    """The system's tensors on ``device`` (positions fp32, Å)."""
    atoms = build_system(name)
    box = None
    if atoms.pbc.any():
        box = torch.as_tensor(atoms.cell.array, dtype=torch.float32, device=device)
    z = torch.as_tensor(atoms.numbers, dtype=torch.long, device=device)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float32, device=device)
    return Inputs(z, pos, torch.zeros_like(z), box)


def static_max_neighbors(n_atoms: int, n_edges: int) -> int:
    """TorchMD-Net's ``max_num_neighbors`` for static shapes: pads its pair list to this x N pairs.

    Its capacity is total (pairs incl. one self loop per atom <= max_num_neighbors x N), so
    the tightest safe value is the mean count; 5 % margin, rounded up to a multiple of 8.
    """
    return 8 * math.ceil(1.05 * (n_edges + n_atoms) / n_atoms / 8)


# --------------------------------------------------------------------------------------
# models and steps (worker side)


def _backend_kwargs(function: Callable, backend: str) -> dict:
    """``backend=...`` for fastnnp's builders; the torch path also runs on a fastnnp without it."""
    if "backend" in inspect.signature(function).parameters:
        return {"backend": backend}
    if backend == "torch":
        return {}
    raise TypeError(f"fastnnp's {function.__name__}() has no backend= keyword: no {backend} backend in this fastnnp")


def _fastnnp_model(weights: str, backend: str, device: torch.device) -> torch.nn.Module:
    _import_fastnnp()
    from fastnnp.models.factory import build_model

    state = torch.load(weights, weights_only=True)
    model = build_model(HPARAMS, list(state), derivative=True, **_backend_kwargs(build_model, backend))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False).to(device)  # frozen, as fastnnp.load_model leaves it


def _torchmdnet_model(weights: str, device: torch.device, pure: bool = False, **hparams) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchmdnet.models.model import create_model
        from torchmdnet_oracle import PureTorch, pure_torch_tensornet

    args = dict(HPARAMS, **hparams)
    state = torch.load(weights, weights_only=True)
    if pure:
        with pure_torch_tensornet():
            model = PureTorch(create_model(args))
        target = model.model
    else:
        model = target = create_model(args)
    target.load_state_dict({**state, "representation_model.distance.box": torch.zeros(3, 3)})
    return model.eval().to(device)


def _eager_step(model: torch.nn.Module, inputs: Inputs) -> Step:
    return lambda: model(inputs.z, inputs.pos, inputs.batch, box=inputs.box)


def _graph_step(model: torch.nn.Module, inputs: Inputs, warmup: int, warmup_s: float) -> Step:
    """One energy + forces call captured as a CUDA graph, the way TorchMD-Net's External
    calculator does it: warm up on a side stream (``warmup`` calls, fewer once ``warmup_s``
    seconds have passed, at least 2), capture; each step copies the positions into the
    captured input and replays."""
    static_pos = inputs.pos.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    start = time.perf_counter()
    with torch.cuda.stream(stream):
        for call in range(warmup):
            model(inputs.z, static_pos, inputs.batch, box=inputs.box)
            if call >= 1 and time.perf_counter() - start > warmup_s:
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


def _tmd_compile_step(weights: str, inputs: Inputs, max_neighbors: int) -> Step:
    """TorchMD-Net's ASE calculator with compile=True: static shapes, energy-only model under
    torch.compile(inductor, dynamic=False, fullgraph=True, reduce-overhead), forces by backward."""
    model = _torchmdnet_model(weights, inputs.pos.device, static_shapes=True, max_num_neighbors=max_neighbors,
                              derivative=False)
    for parameter in model.parameters():
        parameter.requires_grad = False
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


def prepare(backend: str, inputs: Inputs, spec: dict) -> tuple[Step, dict]:
    """The timed callable of one backend (model built, graph captured or compiled) and facts about it."""
    weights, device = spec["weights"], inputs.pos.device
    if backend.startswith("fastnnp-"):
        model = _fastnnp_model(weights, "torch" if backend == "fastnnp-torch" else "triton", device)
        if backend == "fastnnp-triton-graph":
            return _graph_step(model, inputs, spec["warmup"], spec["warmup_s"]), {}
        if backend == "fastnnp-triton-compile":
            return _eager_step(torch.compile(model, dynamic=False), inputs), {}
        return _eager_step(model, inputs), {}
    max_neighbors = spec["max_num_neighbors"]
    if backend == "torchmdnet-static-compile":
        return _tmd_compile_step(weights, inputs, max_neighbors), {"max_num_neighbors": max_neighbors}
    if backend == "torchmdnet-static-graph":
        model = _torchmdnet_model(weights, device, static_shapes=True, max_num_neighbors=max_neighbors)
        facts = {"max_num_neighbors": max_neighbors, "warp_kernels": _uses_warp(model)}
        return _graph_step(model, inputs, TMD_GRAPH_WARMUP, spec["warmup_s"]), facts
    model = _torchmdnet_model(weights, device, pure=backend == "torchmdnet-pure")
    return _eager_step(model, inputs), {"max_num_neighbors": HPARAMS["max_num_neighbors"], "warp_kernels": _uses_warp(model)}


def _uses_warp(model: torch.nn.Module) -> bool:
    """Whether TorchMD-Net's TensorNet modules run its Warp kernels (they fall back silently)."""
    return any(getattr(module, "opt", False) for module in model.modules())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Step, device: torch.device) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """Wall-clock seconds of one call, the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    out = step()
    _sync(device)
    return time.perf_counter() - start, out


def measure(step: Step, device: torch.device, spec: dict) -> dict:
    """First call (values kept), warm-up, then the median of timed calls (seconds/call).

    Warm-up: at least one call after the first, up to ``warmup`` calls or ``warmup_s``
    seconds. Repeats: as many as fit ``target_s`` seconds, 1 .. ``max_repeats``.
    """
    first_s, (energy, forces) = _timed(step, device)
    energy_value = float(energy.detach().double().sum())
    forces_np = forces.detach().float().cpu().numpy()
    warm = [first_s]
    while len(warm) < 2 or (len(warm) < spec["warmup"] and sum(warm[1:]) < spec["warmup_s"]):
        warm.append(_timed(step, device)[0])
    repeats = max(1, min(spec["max_repeats"], int(spec["target_s"] / warm[-1])))
    samples = [_timed(step, device)[0] for _ in range(repeats)]
    np.save(spec["forces_path"], forces_np)
    return {
        "energy": energy_value, "max_force": float(np.abs(forces_np).max()), "first_call_s": first_s,
        "warmup_calls": len(warm), "repeats": repeats, "median_s": statistics.median(samples), "min_s": min(samples),
        "samples_s": samples,
    }


def _memory(device: torch.device) -> dict:
    """Peak memory in MiB: on CUDA torch's allocator peak (allocated and reserved) and the
    device's used memory at the end (all processes, CUDA context included); on CPU peak RSS."""
    if device.type == "cuda":
        if not torch.cuda.is_initialized():
            return {}
        free, total = torch.cuda.mem_get_info(device)
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
                "device_used_mib": (total - free) / 2**20}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --------------------------------------------------------------------------------------
# worker tasks (each runs in its own subprocess)


def task_time(spec: dict) -> dict:
    """Time one backend on one system."""
    device = torch.device(spec["device"])
    torch.backends.cuda.matmul.allow_tf32 = False
    inputs = system_inputs(spec["system"], device)
    start = time.perf_counter()
    step, facts = prepare(spec["backend"], inputs, spec)
    _sync(device)
    setup_s = time.perf_counter() - start
    result = measure(step, device, spec)
    return dict(n_atoms=len(inputs.z), setup_s=setup_s, **facts, **result)


def task_system(spec: dict) -> dict:
    """Atom and directed-edge counts from fastnnp's neighbour list (both directions, no loops)."""
    device = torch.device(spec["device"])
    inputs = system_inputs(spec["system"], device)
    from fastnnp.neighbors import neighbor_list

    with torch.no_grad():
        edges = neighbor_list(inputs.pos, inputs.batch, HPARAMS["cutoff_upper"], box=inputs.box).edge_index
    counts = torch.bincount(edges[0], minlength=len(inputs.z))
    n_atoms, n_edges = len(inputs.z), edges.shape[1]
    return {
        "n_atoms": n_atoms, "n_edges": n_edges, "periodic": inputs.box is not None,
        "box_edge": None if inputs.box is None else float(inputs.box[0, 0]),
        "mean_neighbors": n_edges / n_atoms, "max_neighbors": int(counts.max()),
        "static_max_num_neighbors": static_max_neighbors(n_atoms, n_edges),
    }


def task_parity(spec: dict) -> dict:
    """The shipped checkpoint against TorchMD-Net's stored fp32 outputs (tests/parity.py tolerances)."""
    _import_fastnnp()
    from parity import assert_matches

    import fastnnp

    device = torch.device(spec["device"])
    ref = np.load(os.path.join(CHECKPOINT_DIR, "reference.npz"))
    model = fastnnp.load_model(os.path.join(CHECKPOINT_DIR, "model.ckpt"), device=device, dtype=torch.float32,
                               **_backend_kwargs(fastnnp.load_model, spec["backend"]))
    cases = {}
    for label, prefix in (("molecules", ""), ("periodic", "pbc_")):
        z = torch.as_tensor(ref[f"{prefix}z"], device=device)
        pos = torch.as_tensor(ref[f"{prefix}pos"], dtype=torch.float32, device=device)
        batch = torch.zeros_like(z) if prefix else torch.as_tensor(ref["batch"], device=device)
        box = torch.as_tensor(ref["pbc_box"], dtype=torch.float32, device=device) if prefix else None
        energy, forces = model(z, pos, batch, box=box)
        cases[label] = _parity_case(energy, forces, ref[f"{prefix}energy_f32"], ref[f"{prefix}forces_f32"], assert_matches)
    return dict(passed=all(case["passed"] for case in cases.values()), **cases)


def _parity_case(energy, forces, ref_energy, ref_forces, assert_matches: Callable) -> dict:
    energy = energy.detach().double().cpu().numpy().reshape(ref_energy.shape)
    forces = forces.detach().double().cpu().numpy().reshape(ref_forces.shape)
    case = {"max_energy_error": float(np.abs(energy - ref_energy).max()),
            "max_force_error": float(np.abs(forces - ref_forces).max()),
            "energy_scale": float(np.abs(ref_energy).max()), "force_scale": float(np.abs(ref_forces).max())}
    try:
        assert_matches(energy, forces, ref_energy, ref_forces, torch.float32)
        return dict(passed=True, **case)
    except AssertionError as error:
        return dict(passed=False, failure=str(error), **case)


def task_ceilings(spec: dict) -> dict:
    """Device limits: copy bandwidth (GB/s, bytes read + written), fp32 IEEE and tf32 matmul
    rates (TFLOP/s), and the time of a tiny kernel launched back to back (µs)."""
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    floats = (1 << 28) if cuda else (1 << 24)  # 1 GiB (CPU: 64 MiB) per buffer
    src = torch.ones(floats, device=device)
    dst = torch.empty_like(src)
    copies = 10
    copy_s = _median_time(lambda: [dst.copy_(src) for _ in range(copies)], device, repeats=10) / copies
    n = 8192 if cuda else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    rates = {}
    for name, tf32 in (("fp32_tflops", False), ("tf32_tflops", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        rates[name] = 2 * n**3 / _median_time(lambda: torch.mm(a, b), device, repeats=10) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    tiny = torch.zeros(1, device=device)
    launches = 1000
    launch_s = _median_time(lambda: [tiny.add_(1) for _ in range(launches)], device, repeats=5) / launches
    result = dict(copy_gbps=2 * src.numel() * 4 / copy_s / 1e9, launch_us=launch_s * 1e6, matmul_n=n, **rates)
    if cuda:
        props = torch.cuda.get_device_properties(device)
        result.update(device_name=torch.cuda.get_device_name(device), multiprocessors=props.multi_processor_count,
                      memory_gib=props.total_memory / 2**30)
    else:
        result.update(device_name=_cpu_name())
    return result


def _median_time(call: Callable, device: torch.device, repeats: int) -> float:
    """Median wall-clock seconds of ``call`` after 3 warm-up calls, the device synchronised."""
    for _ in range(3):
        call()
    return statistics.median(_timed(call, device)[0] for _ in range(repeats))


def _cpu_name() -> str:
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return platform.processor() or "cpu"


TASKS = {"time": task_time, "system": task_system, "parity": task_parity, "ceilings": task_ceilings}


def worker_main(spec_json: str) -> None:
    """Run one task; print its result (or error) as one tagged JSON line."""
    spec = json.loads(spec_json)
    device = torch.device(spec["device"])
    try:
        result = TASKS[spec["task"]](spec)
    except Exception as error:  # noqa: BLE001  (every failure is a result: the parent records it)
        traceback.print_exc()
        result = {"error": _describe(error), "detail": traceback.format_exc().strip().splitlines()[-4:]}
    if spec["task"] == "time":
        with contextlib.suppress(RuntimeError):  # a device left broken by the error has no memory stats
            result.update(_memory(device))
    print(RESULT_TAG + json.dumps(result), flush=True)


def _describe(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:300]
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text}"
    return f"{type(error).__name__}: {text}"


# --------------------------------------------------------------------------------------
# parent side


class Runner:
    """Starts worker subprocesses, each with its own timeout, inside an overall time budget."""

    def __init__(self, device: str, timeout_s: float, budget_s: float | None):
        self.device = device
        self.timeout_s = timeout_s
        self.deadline = None if budget_s is None else time.monotonic() + budget_s

    def __call__(self, task: str, **spec) -> dict:
        left = math.inf if self.deadline is None else self.deadline - time.monotonic()
        if left < 15:
            return {"error": "skipped: the run's time budget is spent"}
        timeout = min(self.timeout_s, left)
        why = "" if timeout == self.timeout_s else " (the run's time budget)"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(dict(spec, task=task, device=self.device))]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Its own process group (same session): a timeout kills it and whatever it started.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                process_group=0)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timeout after {timeout:.0f} s{why}"}
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
        if lines:
            return json.loads(lines[-1][len(RESULT_TAG):])
        tail = stderr.strip().splitlines()[-4:] or [f"exit status {proc.returncode}"]
        oom = "out of memory" in stderr.lower() or proc.returncode in (-9, 137)
        return {"error": ("out of memory: " if oom else "crashed: ") + tail[-1][:300], "detail": tail}


def run(args: argparse.Namespace) -> dict:
    """Ceilings, parity, then every (system, backend); the report is rewritten as it grows."""
    runner = Runner(args.device, args.timeout_s, args.budget_s)
    report = {"environment": environment(), "config": config(args), "ceilings": {}, "parity": {}, "systems": {}, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.pt")
        torch.manual_seed(args.seed)
        _import_fastnnp()
        from fastnnp.models.factory import build_model

        torch.save(build_model(HPARAMS).state_dict(), weights)
        report["ceilings"] = _progress("ceilings", runner("ceilings"))
        report["environment"]["device"] = report["ceilings"].get("device_name", args.device)
        save(finish(report), args.out)
        if not args.skip_parity:
            for backend in ("fastnnp-triton", "fastnnp-torch"):
                report["parity"][backend] = _progress(f"parity {backend}", runner("parity", backend=backend.split("-")[1]))
            save(finish(report), args.out)
        for system in args.systems:
            info = report["systems"][system] = _progress(f"system {system}", runner("system", system=system))
            rows = [_time_row(runner, system, backend, info, weights, tmp, args) for backend in args.backends]
            compare_forces(rows, tmp)
            report["results"].extend(rows)
            save(finish(report), args.out)
    return report


def _time_row(runner: Runner, system: str, backend: str, info: dict, weights: str, tmp: str,
              args: argparse.Namespace) -> dict:
    spec = {"system": system, "backend": backend, "weights": weights, "forces_path": _forces_path(tmp, system, backend),
            "max_num_neighbors": info.get("static_max_num_neighbors", 64), "warmup": args.warmup,
            "warmup_s": args.warmup_s, "target_s": args.target_s, "max_repeats": args.max_repeats}
    if backend in CUDA_ONLY and args.device == "cpu":
        result = {"error": "skipped: needs CUDA"}
    else:
        result = runner("time", **spec)
    return _progress(f"{system} {backend}", dict(system=system, backend=backend, **result))


def _forces_path(tmp: str, system: str, backend: str) -> str:
    return os.path.join(tmp, f"forces-{system}-{backend}.npy")


def _progress(label: str, result: dict) -> dict:
    brief = result.get("error") or {k: result[k] for k in ("median_s", "passed", "n_edges", "device_name") if k in result}
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {brief}", flush=True)
    return result


def compare_forces(rows: list[dict], tmp: str) -> None:
    """Each row's forces against the reference row of the same run (max abs and relative)."""
    reference = _reference(rows)
    if reference is None:
        return
    ref = np.load(_forces_path(tmp, reference["system"], reference["backend"]))
    scale = max(1.0, float(np.abs(ref).max()))
    for row in rows:
        path = _forces_path(tmp, row["system"], row["backend"])
        if "energy" in row and os.path.exists(path):
            diff = float(np.abs(np.load(path) - ref).max())
            row.update(force_reference=reference["backend"], force_max_abs_diff=diff,
                       force_ok=diff <= FORCE_RTOL * scale)


def _reference(rows: list[dict]) -> dict | None:
    for backend in REFERENCES:
        for row in rows:
            if row["backend"] == backend and "energy" in row:
                return row
    return None


def finish(report: dict) -> dict:
    """Derived numbers: energy checks, the work model and floors, rates, speed-ups."""
    ceilings = report.get("ceilings") or {}
    by_system: dict[str, list[dict]] = {}
    for row in report["results"]:
        by_system.setdefault(row["system"], []).append(row)
    for system, rows in by_system.items():
        info = report["systems"].get(system, {})
        _check_energies(rows)
        if "n_edges" in info:
            work = info["work"] = tensornet_work(info["n_atoms"], info["n_edges"], HPARAMS["embedding_dimension"],
                                                 HPARAMS["num_rbf"], HPARAMS["num_layers"])
            if "copy_gbps" in ceilings and "fp32_tflops" in ceilings:
                info.update(floor_time(work, ceilings))
        for row in rows:
            if "median_s" in row:
                _rates(row, info)
        info["speedup_of_fastnnp_triton"] = _speedups(rows)
    return report


def _check_energies(rows: list[dict]) -> None:
    reference = _reference(rows)
    for row in rows:
        if reference is not None and "energy" in row:
            diff = abs(row["energy"] - reference["energy"])
            row.update(energy_reference=reference["backend"], energy_rel_diff=diff / max(1.0, abs(reference["energy"])),
                       energy_ok=diff <= ENERGY_RTOL * max(1.0, abs(reference["energy"])))


def _rates(row: dict, info: dict) -> None:
    row["atoms_per_us"] = row["n_atoms"] / (row["median_s"] * 1e6)
    if "work" in info:
        row["achieved_gbps"] = info["work"]["bytes"] / row["median_s"] / 1e9
        row["achieved_tflops"] = info["work"]["flops"] / row["median_s"] / 1e12
    if "floor_s" in info:
        row["time_over_floor"] = row["median_s"] / info["floor_s"]


def _speedups(rows: list[dict]) -> dict:
    """Time of each TorchMD-Net mode / time of fastnnp-triton (> 1: fastnnp-triton is faster)."""
    times = {row["backend"]: row["median_s"] for row in rows if "median_s" in row}
    if "fastnnp-triton" not in times:
        return {}
    return {mode: times[mode] / times["fastnnp-triton"] for mode in TORCHMDNET_MODES if mode in times}


# --------------------------------------------------------------------------------------
# report


def environment() -> dict:
    """Versions, commit and date (the device name is filled in from the ceilings task)."""
    versions = {}
    for name in ("torch", "triton", "torchmd-net", "warp-lang", "ase", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "cuda": torch.version.cuda,
            "versions": versions, "commit": _commit(), "source_digest": source_digest(), "cpu": _cpu_name()}


def _commit() -> str:
    """``git rev-parse HEAD`` of the checkout, else $FASTNNP_COMMIT, else 'unknown'."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, cwd=REPO, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return os.environ.get("FASTNNP_COMMIT", "unknown")


def source_digest() -> str:
    """sha256 (first 16 hex digits) of fastnnp/ and kernels/ *.py, paths and contents, sorted:
    names the code that ran even when the checkout has uncommitted changes."""
    digest = hashlib.sha256()
    for top in ("fastnnp", "kernels"):
        for folder, _, files in sorted(os.walk(os.path.join(REPO, top))):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, REPO).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def config(args: argparse.Namespace) -> dict:
    return {"hparams": HPARAMS, "precision": "fp32", "tf32_matmul": False, "seed": args.seed, "device": args.device,
            "systems": args.systems, "backends": args.backends, "warmup": args.warmup, "warmup_s": args.warmup_s,
            "target_s": args.target_s, "max_repeats": args.max_repeats, "timeout_s": args.timeout_s,
            "torchmdnet_graph_warmup": TMD_GRAPH_WARMUP, "energy_rtol": ENERGY_RTOL, "force_rtol": FORCE_RTOL,
            "torchmdnet_static": "static_shapes=True; max_num_neighbors = 8*ceil(1.05*(E+N)/N/8) per system "
                                 "(systems[*].static_max_num_neighbors); TorchMD-Net 3.1 has no check_errors "
                                 "option, its pair-count check is a graph-safe torch._assert_async"}


def save(report: dict, path: str) -> None:
    """Write the report atomically (a run killed mid-write keeps the previous version)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)


def merge(paths: list[str]) -> dict:
    """Join reports of split runs: later files' rows replace earlier ones for the same
    (system, backend); ceilings and device come from the first file that measured them."""
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    merged = {"environment": reports[0]["environment"], "config": reports[0]["config"], "ceilings": {}, "parity": {},
              "systems": {}, "results": [], "merged_from": []}
    rows: dict[tuple[str, str], dict] = {}
    for path, report in zip(paths, reports):
        if not merged["ceilings"] and "copy_gbps" in report.get("ceilings", {}):
            merged["ceilings"] = report["ceilings"]
            merged["environment"] = report["environment"]
        merged["parity"].update(report.get("parity", {}))
        merged["systems"].update(report.get("systems", {}))
        rows.update({(row["system"], row["backend"]): row for row in report["results"]})
        merged["merged_from"].append({"path": path, "environment": report["environment"],
                                      "ceilings": report.get("ceilings", {})})
    order = {name: i for i, name in enumerate(merged["systems"])}
    merged["results"] = sorted(rows.values(), key=lambda r: (order.get(r["system"], len(order)), BACKENDS.index(r["backend"])))
    return merged


def table(report: dict) -> str:
    """The printed summary: seconds/call and peak MiB per (system, backend), speed-ups and floors."""
    env, ceil = report["environment"], report.get("ceilings") or {}
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [(f"TensorNet F={HPARAMS['embedding_dimension']} L={HPARAMS['num_layers']} R={HPARAMS['num_rbf']} "
             f"cutoff {HPARAMS['cutoff_upper']} Å, energy+forces, fp32 (no tf32); {env.get('device')}; {versions}; "
             f"commit {env['commit'][:12]} (source {env['source_digest']}); {env['date']}")]
    if "copy_gbps" in ceil:
        lines.append(f"ceilings: copy {ceil['copy_gbps']:.0f} GB/s, fp32 mm {ceil['fp32_tflops']:.1f} TFLOP/s "
                     f"(tf32 {ceil['tf32_tflops']:.1f}), back-to-back tiny kernel {ceil['launch_us']:.1f} µs")
    else:
        lines.append(f"ceilings: not measured ({ceil.get('error', 'absent')})")
    for backend, parity in report.get("parity", {}).items():
        lines.append(f"parity vs TorchMD-Net reference.npz, {backend}: {_parity_text(parity)}")
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in report["results"])]
    modes = [m for m in TORCHMDNET_MODES if m in backends] if "fastnnp-triton" in backends else []
    cells = {(r["system"], r["backend"]): r for r in report["results"]}
    head = ["system", "atoms", "edges/atom"] + [c for b in backends for c in (f"{b} s", "MiB")]
    head += [f"x vs {m}" for m in modes]
    head += ["floor s (mem/comp)", "triton t/floor"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, info in report["systems"].items():
        triton = cells.get((system, "fastnnp-triton"), {})
        row = [system, str(info.get("n_atoms", "?")), f"{info['mean_neighbors']:.1f}" if "mean_neighbors" in info else "?"]
        row += [c for b in backends for c in _cells(cells.get((system, b)))]
        row += [f"{info.get('speedup_of_fastnnp_triton', {})[m]:.2f}" if m in info.get("speedup_of_fastnnp_triton", {})
                else "-" for m in modes]
        row.append(f"{info['floor_s']:.3g} ({info['memory_floor_s']:.2g}/{info['compute_floor_s']:.2g})"
                   if "floor_s" in info else "-")
        row.append(f"{triton['time_over_floor']:.1f}" if "time_over_floor" in triton else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "s = median seconds per energy+forces call; MiB = peak torch-allocated memory (CPU: peak RSS); "
              "x = TorchMD-Net mode time / fastnnp-triton time; (E!) = energy or forces disagree with "
              f"{REFERENCES[0]} beyond 1e-4 relative. Static modes pad to max_num_neighbors = "
              + ", ".join(f"{s}: {i['static_max_num_neighbors']}" for s, i in report["systems"].items()
                          if "static_max_num_neighbors" in i)]
    return "\n".join(lines + _rates_table(report, cells))


def _rates_table(report: dict, cells: dict) -> list[str]:
    lines = ["", "fastnnp-triton against the work model (tensornet_work) and the measured ceilings:", "",
             ("| system | GFLOP | MB moved | floor s | radial-MLP-free floor s | fastnnp-triton s | t/floor | "
             "achieved GB/s | achieved TFLOP/s |"), "|---|---|---|---|---|---|---|---|---|"]
    for system, info in report["systems"].items():
        row = cells.get((system, "fastnnp-triton"), {})
        if "work" not in info:
            continue
        work = info["work"]
        values = [f"{work['flops'] / 1e9:.3g}", f"{work['bytes'] / 1e6:.3g}",
                  f"{info['floor_s']:.3g}" if "floor_s" in info else "-",
                  f"{info['floor_without_radial_mlp_s']:.3g}" if "floor_s" in info else "-",
                  _time_text(row),
                  f"{row['time_over_floor']:.1f}" if "time_over_floor" in row else "-",
                  f"{row['achieved_gbps']:.1f}" if "achieved_gbps" in row else "-",
                  f"{row['achieved_tflops']:.2f}" if "achieved_tflops" in row else "-"]
        lines.append(f"| {system} | " + " | ".join(values) + " |")
    return lines


def _cells(row: dict | None) -> tuple[str, str]:
    """A row's seconds (or why it has none) and peak MiB."""
    mib = f"{row['peak_mib']:.0f}" if row and "median_s" in row and "peak_mib" in row else "-"
    return _time_text(row), mib


def _time_text(row: dict | None) -> str:
    """Median seconds per call, flagged (E!) when energy or forces disagree; else OOM/timeout/skip/FAIL."""
    if not row:
        return "-"
    if "median_s" not in row:
        error = row.get("error", "failed")
        for key, short in (("out of memory", "OOM"), ("timeout", "timeout"), ("skipped", "skip")):
            if key in error:
                return short
        return "FAIL"
    flag = "" if row.get("energy_ok", True) and row.get("force_ok", True) else " (E!)"
    return f"{row['median_s']:.3g}{flag}"


def _parity_text(parity: dict) -> str:
    if "passed" not in parity:
        return f"NOT RUN: {parity.get('error')}"
    verdict = "PASS" if parity["passed"] else "*** FAIL ***"
    parts = [f"{k} |ΔE| {v['max_energy_error']:.1e}, max|ΔF| {v['max_force_error']:.1e}"
             for k, v in parity.items() if isinstance(v, dict)]
    return f"{verdict} ({'; '.join(parts)})"


# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="*", help="periodic water boxes, atoms (default 1e3 1e4 1e5 1e6)")
    parser.add_argument("--molecules", type=int, nargs="*", help="open-boundary water droplets, atoms (default 22 50 100 200)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        help=f"default: all but the opt-in {', '.join(OPT_IN)}")
    parser.add_argument("--quick", action="store_true", help="tiny systems and few repeats (smoke test)")
    parser.add_argument("--skip-parity", action="store_true", help="no checkpoint parity (e.g. in a second split run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared random weights")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls (at most), the first included")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="warm-up stops after this many seconds")
    parser.add_argument("--target-s", type=float, default=5.0, help="timed calls: as many as fit this many seconds")
    parser.add_argument("--max-repeats", type=int, default=100)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per subprocess")
    parser.add_argument("--budget-s", type=float, help="whole run: no subprocess is started after this many seconds")
    parser.add_argument("--out", help="report JSON (default bench/results/gpu_tensornet.json; with --device cpu "
                                      "a file in the temporary folder, so smoke tests leave bench/results alone)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join the reports of split runs into --out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None:
        folder = tempfile.gettempdir() if args.device == "cpu" else os.path.join(REPO, "bench", "results")
        args.out = os.path.join(folder, "gpu_tensornet.json")
    if args.quick:
        args.sizes = [300] if args.sizes is None else args.sizes
        args.molecules = [22] if args.molecules is None else args.molecules
        args.warmup, args.target_s, args.max_repeats, args.timeout_s = 2, 1.0, 3, min(args.timeout_s, 240.0)
    sizes = [1000, 10000, 100000, 1000000] if args.sizes is None else args.sizes
    molecules = [22, 50, 100, 200] if args.molecules is None else args.molecules
    args.systems = [f"droplet-{n}" for n in molecules] + [f"water-{n}" for n in sizes]
    args.backends = args.backends or [b for b in BACKENDS if b not in OPT_IN]
    args.backends = sorted(set(args.backends), key=RUN_ORDER.index)
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    report = merge(args.merge) if args.merge else run(args)
    save(finish(report), args.out)
    print(table(report))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
