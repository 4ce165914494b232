"""One (system, backend) measurement, run as ``python -m fastnnp.bench.worker SPEC_JSON``.

The worker builds the system, counts its neighbours when asked (``@@SYSTEM`` line), loads
the backend, makes the first call (timed apart: loading, compiling, capturing, autotuning),
checks its energies and forces against the reference row's saved ones, and only then runs
the warm-up and the timed calls. It prints one ``@@RESULT`` JSON line, a failure included;
an out-of-memory error is a result, not a crash of the run.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback

import numpy as np
import torch

from . import systems
from .metrics import agreement
from .steps import Inputs, prepare, static_max_neighbors
from .timing import peak_memory_mib, repeat, synchronize, timed

SYSTEM_TAG = "@@SYSTEM "
RESULT_TAG = "@@RESULT "
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def device_inputs(system: systems.System, device: torch.device, dtype: torch.dtype) -> Inputs:
    """The system's tensors on ``device``; a box only for periodic systems."""
    atoms = system.atoms
    box = torch.as_tensor(atoms.cell.array, dtype=dtype, device=device) if atoms.pbc.any() else None
    return Inputs(torch.as_tensor(atoms.numbers, dtype=torch.long, device=device),
                  torch.as_tensor(atoms.positions, dtype=dtype, device=device),
                  torch.as_tensor(system.batch, device=device), box)


def neighbor_stats(inputs: Inputs, cutoff: float) -> dict:
    """Directed edges (both directions, no self loops) within ``cutoff`` Å, from fastnnp's
    neighbour list, and the mean and largest count per atom."""
    from ..neighbors import neighbor_list

    with torch.no_grad():
        edges = neighbor_list(inputs.pos, inputs.batch, cutoff, box=inputs.box).edge_index[0]
    n_atoms, n_edges = len(inputs.z), int(edges.numel())
    largest = int(torch.bincount(edges, minlength=n_atoms).max()) if n_edges else 0
    return {"n_edges": n_edges, "neighbors_per_atom": n_edges / n_atoms, "max_neighbors": largest}


def measure(spec: dict) -> dict:
    """The measurement ``spec`` describes (keys: see :func:`fastnnp.bench.runner.Runner.measure`)."""
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    system = systems.build(spec["system"])
    inputs = device_inputs(system, device, dtype)
    stats = spec["stats"]
    if stats is None:
        stats = neighbor_stats(inputs, spec["cutoff"])
        print(SYSTEM_TAG + json.dumps(stats), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    static = static_max_neighbors(len(inputs.z), stats["n_edges"])
    start = time.perf_counter()
    step = prepare(spec["backend"], spec["checkpoint"], inputs, dtype, static, max(static, spec["max_num_neighbors"]))
    synchronize(device)
    result = {"setup_s": time.perf_counter() - start}
    result["first_call_s"], (energy, forces) = timed(step, device)
    energy = energy.detach().double().cpu().numpy().ravel()
    forces = forces.detach().double().cpu().numpy()
    result.update(energy=float(energy.sum()), max_abs_force=float(np.abs(forces).max()))
    if spec["save_reference"]:
        np.savez(spec["save_reference"], energy=energy, forces=forces)
    if spec["reference"]:
        saved = np.load(spec["reference"]["path"])
        check = agreement(energy, forces, saved["energy"], saved["forces"], spec["dtype"], spec["backend"])
        result["agreement"] = dict(check, reference=spec["reference"]["backend"])
        if not check["passed"]:
            return dict(result, status="disagrees")
    del energy, forces
    result.update(repeat(step, device, result["first_call_s"], spec["warmup"], spec["repeats"], spec["target_s"]))
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    return dict(result, status="ok", torch_threads=torch.get_num_threads())


def describe_failure(error: BaseException) -> dict:
    """``status`` ("oom" or "failed") and a one-line ``error`` for an exception."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    oom = isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
        key in text.lower() for key in ("out of memory", "can't allocate memory", "cannot allocate memory"))
    return {"status": "oom" if oom else "failed", "error": f"{type(error).__name__}: {text}"}


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        result = measure(spec)
    except Exception as error:  # noqa: BLE001  (every failure is a result: the parent records it)
        traceback.print_exc()
        result = describe_failure(error)
    with contextlib.suppress(RuntimeError):  # a device left broken by the error has no memory stats
        result.update(peak_memory_mib(torch.device(spec["device"])))
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
