"""``python -m fastnnp.bench``: a tiny end-to-end run and the pure helpers behind it."""

import importlib.util
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastnnp.bench import backends, metrics, systems, timing
from fastnnp.bench.runner import merge
from fastnnp.bench.steps import static_max_neighbors
from fastnnp.bench.worker import describe_failure
from fastnnp.cli import main as fastnnp_main

HAS_TORCHMDNET = importlib.util.find_spec("torchmdnet") is not None


def test_tiny_quick_run_writes_table_json_and_plot(tmp_path):
    command = [sys.executable, "-m", "fastnnp.bench", "--quick", "--model", "tensornet-64", "--systems", "droplet-22",
               "--backends", "fastnnp-torch", "torchmdnet", "fastnnp-triton-graph", "--warmup", "0", "--repeats", "2",
               "--output", str(tmp_path), "--name", "tiny"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.json", "tiny.md", "tiny.png"}

    report = json.loads((tmp_path / "tiny.json").read_text())
    env = report["environment"]
    assert env["device"] and env["commit"] and env["source_digest"] and env["versions"]["torch"] == torch.__version__
    assert report["unavailable"]["fastnnp-triton-graph"] == "needs CUDA"
    assert report["systems"]["droplet-21"]["n_atoms"] == 21 and report["systems"]["droplet-21"]["n_edges"] > 0
    rows = {row["backend"]: row for row in report["results"]}
    reference = rows["fastnnp-torch"]
    assert reference["status"] == "ok" and reference["agreement"] == {"reference": "fastnnp-torch", "passed": True}
    assert len(reference["samples_s"]) == 2 and reference["first_call_s"] > 0 and reference["peak_mib"] > 0
    assert reference["ns_per_day_2fs"] == pytest.approx(2 * reference["ns_per_day_1fs"])
    if HAS_TORCHMDNET:
        tmd = rows["torchmdnet"]
        assert tmd["status"] == "ok" and tmd["agreement"]["passed"] and tmd["agreement"]["reference"] == "fastnnp-torch"
        assert reference["speedup"]["vs_torchmdnet"] == pytest.approx(tmd["median_ms"] / reference["median_ms"])
    else:
        assert "torchmd-net is not installed" in report["unavailable"]["torchmdnet"]

    table = (tmp_path / "tiny.md").read_text()
    assert "| × torchmdnet | × TMD best |" in table and "droplet-21" in table and "not run: fastnnp-triton-graph" in table
    assert (tmp_path / "tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_fastnnp_bench_forwards_to_the_benchmark(capsys):
    with pytest.raises(SystemExit) as done:
        fastnnp_main(["bench", "--help"])
    assert done.value.code == 0
    assert "usage: fastnnp bench" in capsys.readouterr().out


def test_ns_per_day_and_throughput():
    assert metrics.ns_per_day(1e-3, 1.0) == pytest.approx(86.4)  # 86 400 000 steps of 1 fs
    rates = metrics.throughput(1000, 0.5)
    assert rates["atom_steps_per_s"] == pytest.approx(2000)
    assert rates["ns_per_day_1fs"] == pytest.approx(0.1728) and rates["ns_per_day_2fs"] == pytest.approx(0.3456)


def test_sample_stats_in_milliseconds():
    stats = metrics.sample_stats([0.004, 0.001, 0.002, 0.003, 0.005])
    assert stats == pytest.approx({"median_ms": 3, "q1_ms": 2, "q3_ms": 4, "min_ms": 1, "max_ms": 5})
    assert metrics.sample_stats([0.002])["q1_ms"] == pytest.approx(2)


def test_speedups_against_default_and_fastest_torchmdnet_mode():
    rows = [{"backend": "fastnnp-torch", "median_ms": 10.0}, {"backend": "torchmdnet", "median_ms": 40.0},
            {"backend": "torchmdnet-pure", "median_ms": 20.0}, {"backend": "fastnnp-triton", "status": "oom"}]
    ratios = metrics.speedups(rows, backends.TORCHMDNET)
    assert ratios["fastnnp-torch"] == {"vs_torchmdnet": 4.0, "vs_torchmdnet_best": 2.0, "torchmdnet_best": "torchmdnet-pure"}
    assert set(ratios) == {"fastnnp-torch", "torchmdnet", "torchmdnet-pure"}
    assert metrics.speedups(rows[:1], backends.TORCHMDNET) == {}


def test_agreement_tolerances():
    energy, forces = np.array([-100.0, -50.0]), np.ones((4, 3))  # tolerances 1e-2 and 5e-3 (fp32)
    assert metrics.agreement(energy + 4e-3, forces + 5e-5, energy, forces, "float32", "fastnnp-torch")["passed"]
    assert not metrics.agreement(energy + [0, 6e-3], forces, energy, forces, "float32", "fastnnp-torch")["passed"]
    assert not metrics.agreement(energy, forces + 2e-4, energy, forces, "float32", "fastnnp-triton")["passed"]
    assert not metrics.agreement(energy + 4e-3, forces, energy, forces, "float64", "fastnnp-torch")["passed"]
    # The TF32 rows: 1e-2 relative (energy tolerances 1 and 0.5, forces 1e-2); float32 rows stay at 1e-4.
    tf32 = "fastnnp-triton-exact-tf32"
    check = metrics.agreement(energy + [0.9, 0.4], forces + 9e-3, energy, forces, "float32", tf32)
    assert check["passed"] and check["rtol"] == 1e-2
    assert not metrics.agreement(energy + [0, 0.6], forces, energy, forces, "float32", tf32)["passed"]
    assert not metrics.agreement(energy, forces + 2e-2, energy, forces, "float32", "fastnnp-triton-exact-tf32-graph")["passed"]
    assert not metrics.agreement(energy, forces + 9e-3, energy, forces, "float32", "fastnnp-triton-exact")["passed"]


def test_tolerance_lookup_by_backend_and_dtype():
    assert metrics.tolerance("fastnnp-triton-exact-tf32", "float32") == 1e-2
    assert metrics.tolerance("fastnnp-triton-exact-tf32-graph", "float32") == 1e-2
    assert metrics.tolerance("fastnnp-triton-exact-graph", "float32") == metrics.RTOL["float32"] == 1e-4
    assert metrics.tolerance("torchmdnet", "float64") == metrics.RTOL["float64"] == 1e-6
    assert set(metrics.BACKEND_RTOL) == set(backends.TF32)
    with pytest.raises(ValueError, match="float32 only"):
        metrics.tolerance("fastnnp-triton-exact-tf32", "float64")


def test_backend_registry_is_consistent():
    """Every named row is a backend; fastnnp's rows have load_model arguments; the new rows are
    opt-in and CUDA-only (graphs, TF32) and the TF32 rows run the exact (radial-MLP) kernels."""
    named = (set(backends.OPT_IN) | set(backends.CUDA_ONLY) | set(backends.TRITON) | set(backends.FASTNNP)
             | set(backends.GRAPHED) | set(backends.TF32) | set(backends.TORCHMDNET) | set(backends.REFERENCES))
    assert named <= set(backends.BACKENDS) and len(set(backends.BACKENDS)) == len(backends.BACKENDS)
    assert set(backends.FASTNNP) == {b for b in backends.BACKENDS if b.startswith("fastnnp-")}
    assert set(backends.TRITON) == {b for b in backends.BACKENDS if b.startswith("fastnnp-triton")}
    assert set(backends.TORCHMDNET) == {b for b in backends.BACKENDS if b.startswith("torchmdnet")}
    assert set(backends.GRAPHED) == {b for b in backends.TRITON if b.endswith("-graph")} <= set(backends.CUDA_ONLY)
    assert set(backends.TF32) == {"fastnnp-triton-exact-tf32", "fastnnp-triton-exact-tf32-graph"}
    assert set(backends.TF32) <= set(backends.CUDA_ONLY) & set(backends.OPT_IN)
    assert all(backends.FASTNNP[b] == dict(backend="triton", radial="exact") for b in backends.TF32)
    assert backends.FASTNNP["fastnnp-triton-exact-graph"] == backends.FASTNNP["fastnnp-triton-exact"]
    for backend in backends.BACKENDS:
        assert f"  {backend} " in backends.__doc__, backend  # documented in the table
    assert not set(backends.TF32) & set(backends.default_backends("cuda"))
    assert not set(backends.CUDA_ONLY) & set(backends.default_backends("cpu"))


def test_tf32_rows_are_cuda_only_and_tensornet_only():
    tensornet = {"model": "tensornet"}
    for backend in (*backends.TF32, "fastnnp-triton-exact-graph"):
        assert backends.unavailable(backend, "cpu", "float32", tensornet, interpreting=True) == "needs CUDA"
    for model in ("tensornet", "tensornet2"):
        assert backends.unavailable("fastnnp-triton-exact-tf32", "cuda", "float32", {"model": model}, False) is None
    why = backends.unavailable("fastnnp-triton-exact-tf32-graph", "cuda", "float32",
                               {"model": "graph-network", "activation": "silu"}, False)
    assert why == "TF32 applies to the radial-MLP kernels of tensornet and tensornet2 only, not graph-network"
    assert "float32" in backends.unavailable("fastnnp-triton-exact-tf32", "cuda", "float64", tensornet, False)


def test_set_tf32_sets_the_triton_precision_and_refuses_models_without_one(tmp_path):
    from fastnnp.bench.models import write_preset_checkpoint
    from fastnnp.bench.steps import set_tf32
    from fastnnp.loading import load_model

    checkpoint = write_preset_checkpoint("tensornet-64", str(tmp_path / "t.ckpt"), seed=0)
    triton = load_model(checkpoint, **backends.FASTNNP["fastnnp-triton-exact-tf32"])
    assert triton.representation_model.precision == "ieee"
    set_tf32(triton)
    assert triton.representation_model.precision == "tf32"
    with pytest.raises(ValueError, match="no TF32 setting"):
        set_tf32(load_model(checkpoint, backend="torch"))


def test_the_table_names_the_tf32_rows_and_their_tolerance():
    from fastnnp.bench.report import _tf32

    assert _tf32({"tf32_rows": []}) == "TF32 off"
    config = {"tf32_rows": ["fastnnp-triton-exact-tf32"], "agreement_rtol_by_backend": {"fastnnp-triton-exact-tf32": 0.01}}
    assert _tf32(config) == "TF32 off except the radial-MLP kernels of fastnnp-triton-exact-tf32 checked at rtol 0.01"


def test_system_names_carry_the_real_atom_count():
    assert systems.build("water-1000").name == "water-999"
    droplet = systems.build("droplet-22")
    assert droplet.name == "droplet-21" and not droplet.atoms.pbc.any()
    copper = systems.build("cu-256")
    assert copper.name == "cu-256" and copper.atoms.pbc.all() and set(copper.atoms.numbers) == {29}
    batch = systems.build("ethanols-288")
    assert batch.name == "ethanols-288" and batch.n_systems == 32 and np.bincount(batch.batch).tolist() == [9] * 32
    with pytest.raises(ValueError, match="unknown system"):
        systems.parse("protein-100")


def test_backends_that_cannot_run_say_why(monkeypatch):
    tensornet = {"model": "tensornet"}
    assert backends.unavailable("fastnnp-triton", "cpu", "float32", tensornet, interpreting=False).startswith("needs CUDA")
    assert backends.unavailable("fastnnp-triton", "cpu", "float32", tensornet, interpreting=True) is None
    assert "float32" in backends.unavailable("fastnnp-triton", "cuda", "float64", tensornet, interpreting=False)
    for model in ("graph-network", "equivariant-transformer"):
        assert backends.unavailable("fastnnp-triton", "cuda", "float32", {"model": model, "activation": "silu"}, False) is None
        assert "Mish" in backends.unavailable("fastnnp-triton", "cuda", "float32", {"model": model, "activation": "mish"}, False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "not installed" in backends.unavailable("torchmdnet", "cpu", "float32", tensornet, interpreting=False)
    assert backends.run_order(["torchmdnet", "fastnnp-triton", "fastnnp-torch"]) == [
        "fastnnp-torch", "torchmdnet", "fastnnp-triton"]


def test_static_neighbour_capacity_covers_mean_count_and_self_loops():
    assert static_max_neighbors(1000, 50_000) == 56  # 1.05 * 51 = 53.55 -> next multiple of 8
    assert static_max_neighbors(10, 0) == 8


def test_repeat_warms_up_until_calls_stop_speeding_up():
    durations = iter([0.5, 0.2, 0.1, 0.1] + [0.0] * 50)
    result = timing.repeat(lambda: time.sleep(next(durations)), torch.device("cpu"), first_s=1.0, warmup=1,
                           repeats=4, target_s=10.0)
    assert len(result["warmup_s"]) == 4 and len(result["samples_s"]) == 4
    assert timing.repeat(lambda: None, torch.device("cpu"), 1.0, warmup=0, repeats=2, target_s=0.0)["warmup_s"] == []


def test_out_of_memory_is_a_status():
    assert describe_failure(torch.OutOfMemoryError("CUDA out of memory."))["status"] == "oom"
    assert describe_failure(RuntimeError("DefaultCPUAllocator: can't allocate memory"))["status"] == "oom"
    assert describe_failure(ValueError("bad"))["status"] == "failed"


def test_merge_keeps_the_later_row(tmp_path):
    def report(ms: float, system: str) -> dict:
        row = {"system": system, "backend": "fastnnp-torch", "status": "ok", "median_ms": ms}
        return {"environment": {}, "config": {}, "unavailable": {"torchmdnet": "x"}, "systems": {system: {}},
                "results": [row]}

    paths = []
    for i, (ms, system) in enumerate([(1.0, "water-999"), (2.0, "water-999"), (3.0, "cu-256")]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(report(ms, system)))
    merged = merge([str(p) for p in paths])
    assert [(r["system"], r["median_ms"]) for r in merged["results"]] == [("water-999", 2.0), ("cu-256", 3.0)]


def test_merge_joins_the_tf32_rows_of_every_file(tmp_path):
    def report(config: dict) -> dict:
        return {"environment": {}, "config": config, "unavailable": {}, "systems": {}, "results": []}

    tf32 = {"tf32_rows": ["fastnnp-triton-exact-tf32"], "agreement_rtol_by_backend": {"fastnnp-triton-exact-tf32": 0.01}}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    paths[0].write_text(json.dumps(report({"dtype": "float32"})))  # no TF32 rows (or an older file)
    paths[1].write_text(json.dumps(report(dict(tf32, dtype="float32"))))
    assert merge([str(p) for p in paths])["config"] == dict(tf32, dtype="float32")
