"""CPU speed and memory of fastnnp's reference path beside TorchMD-Net 3.1, in one run.

TensorNet (F=128, 2 layers, 32 expnorm rbf, cutoff 5 Å, random weights shared by every
backend) energy + forces on periodic water boxes. Every (backend, size) runs in its own
subprocess under an address-space limit, so a backend that runs out of memory is reported,
not fatal, and its peak resident memory is its own. Energies are checked to agree before
any timing is reported.

    python bench/cpu_reference.py                      # 100, 1k, 10k, 100k atoms
    python bench/cpu_reference.py --sizes 100 1000 --repeats 5
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

BACKENDS = ("fastnnp", "torchmdnet", "torchmdnet-pure")
HPARAMS = dict(
    model="tensornet", embedding_dimension=128, num_layers=2, num_rbf=32, rbf_type="expnorm",
    trainable_rbf=False, activation="silu", cutoff_lower=0.0, cutoff_upper=5.0, max_z=32,
    equivariance_invariance_group="O(3)", output_model="Scalar", reduce_op="add", prior_model=None,
    precision=32, derivative=True, atom_filter=-1, max_num_neighbors=128, static_shapes=False,
    box_vecs=None, aggr="add", neighbor_embedding=False, num_heads=8, distance_influence="both",
    attn_activation="silu", vector_cutoff=False, output_mlp_num_layers=0, remove_ref_energy=False,
)


def _build(backend: str, weights: str) -> torch.nn.Module:
    state = torch.load(weights, weights_only=True)
    if backend == "fastnnp":
        from fastnnp.models.factory import build_model

        model = build_model(HPARAMS, list(state))
        model.load_state_dict(state)
        return model.eval()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from torchmdnet.models.model import create_model

    if backend == "torchmdnet-pure":
        from torchmdnet_oracle import PureTorch, pure_torch_tensornet

        with pure_torch_tensornet():
            model = PureTorch(create_model(dict(HPARAMS)))
    else:
        model = create_model(dict(HPARAMS))
    target = model.model if backend == "torchmdnet-pure" else model
    target.load_state_dict({**state, "representation_model.distance.box": torch.zeros(3, 3)})
    return model.eval()


def worker(backend: str, n_atoms: int, repeats: int, weights: str) -> dict:
    """Time one backend on one water box; returns the measurement as a dict."""
    from fastnnp.systems import water_box

    atoms = water_box(n_atoms, seed=0)
    z = torch.as_tensor(atoms.numbers, dtype=torch.long)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float32)
    box = torch.as_tensor(atoms.cell.array, dtype=torch.float32)
    batch = torch.zeros(len(z), dtype=torch.long)
    model = _build(backend, weights)

    def step():
        energy, forces = model(z, pos.clone(), batch, box=box)
        return float(energy.sum()), forces

    start = time.perf_counter()
    energy, forces = step()
    first = time.perf_counter() - start
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return dict(
        backend=backend, n_atoms=len(z), energy=energy, max_force=float(forces.abs().max()),
        first_call_s=first, samples_s=samples, median_s=statistics.median(samples),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _run_worker(backend, n_atoms, repeats, weights, memory_limit_gb, mmap_threshold) -> dict:
    limit = int(memory_limit_gb * 2**30)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    cmd = [sys.executable, __file__, "--worker", backend, str(n_atoms), str(repeats), weights]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit_memory, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]), malloc_mmap_threshold=mmap_threshold)
    text = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    oom = "memory" in proc.stderr.lower() or proc.returncode in (-9, 137)
    return dict(backend=backend, n_atoms=n_atoms, error="out of memory" if oom else text)


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                torch=torch.__version__, python=platform.python_version(), commit=commit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit-gb", type=float, default=22.0)
    parser.add_argument(
        "--large-from", type=int, default=50000,
        help="from this many atoms on, workers run with glibc's MALLOC_MMAP_THRESHOLD_=65536 so freed "
             "memory goes back to the system (glibc's default heap fragments to several times the live size)",
    )
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "cpu_reference.json"))
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, n_atoms, repeats, weights = args.worker
        print(json.dumps(worker(backend, int(n_atoms), int(repeats), weights)))
        return

    from fastnnp.models.factory import build_model

    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.pt")
        torch.save(build_model(HPARAMS).state_dict(), weights)
        for n_atoms in args.sizes:
            for backend in args.backends:
                repeats = args.repeats if n_atoms < 50000 else 1
                threshold = 65536 if n_atoms >= args.large_from else None
                result = _run_worker(backend, n_atoms, repeats, weights, args.memory_limit_gb, threshold)
                results.append(result)
                print(json.dumps(result), flush=True)
    _check_agreement(results)
    report = dict(machine=_machine(), hparams=HPARAMS, results=results)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(_table(results, report["machine"]))


def _check_agreement(results: list) -> None:
    by_size: dict = {}
    for r in results:
        if "energy" in r:
            by_size.setdefault(r["n_atoms"], []).append(r)
    for size, rows in by_size.items():
        ref = rows[0]["energy"]
        for r in rows[1:]:
            if abs(r["energy"] - ref) > 1e-5 * max(1.0, abs(ref)):
                raise SystemExit(f"energies disagree at {size} atoms: {rows[0]['backend']} {ref} vs {r['backend']} {r['energy']}")


def _table(results: list, machine: dict) -> str:
    lines = [f"TensorNet F=128 L=2 cutoff 5 Å, energy+forces, water boxes; {machine['cpu']}, "
             f"{machine['torch_threads']} threads, torch {machine['torch']}, commit {machine['commit']}", "",
             "| atoms | backend | median s/step | first call s | peak RSS MB | speed-up vs torchmdnet |",
             "|---:|---|---:|---:|---:|---:|"]
    base = {r["n_atoms"]: r["median_s"] for r in results if r["backend"] == "torchmdnet" and "median_s" in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['n_atoms']} | {r['backend']} | {r['error']} | | | |")
            continue
        ratio = f"{base[r['n_atoms']] / r['median_s']:.1f}x" if r["n_atoms"] in base else "n/a"
        lines.append(f"| {r['n_atoms']} | {r['backend']} | {r['median_s']:.3f} | {r['first_call_s']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
