"""bench/work_model.py writes its report, its floors follow max(bytes / bandwidth, FLOPs / rate)
summed over the steps, its radial-MLP count matches one worked by hand, and its radial-table
counts match the table kernels' (per-edge arithmetic ops of their compiled TTIR at F=128)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "work_model.py"


def test_work_model_report(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "wm")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "wm.json").read_text())
    assert (tmp_path / "wm.md").read_text().startswith("# Work model")
    hw = report["hardware"]
    assert [m["shape"]["channels"] for m in report["models"]] == [128, 64]
    for model in report["models"]:
        for variant in ("mlp", "table"):
            data = model["variants"][variant]
            for atoms in (1_000, 1_000_000):
                for precision, rate in (("ieee", hw["fp32_rate"]), ("tf32", hw["tf32_rate"])):
                    floor = sum(
                        st["count"] * max((st["bytes"] * atoms + st["fixed"]) / hw["bandwidth"],
                                          st["matmul"] * atoms / rate + st["other"] * atoms / hw["fp32_rate"])
                        for st in data["steps"]
                    )
                    assert data["summary"]["floor_seconds"][f"{precision}_{atoms}"] == floor
        # The table variant has no matmul in the edge kernels.
        assert all(st["matmul"] == 0 for st in model["variants"]["table"]["steps"] if st["name"].endswith("(table)"))
    # F=128, 32 rbf: the interaction MLP per edge is 2 (32 x 128 + 128 x 256 + 256 x 384) = 270336 FLOPs.
    f128 = report["models"][0]
    forward = next(st for st in f128["variants"]["mlp"]["steps"] if st["name"] == "interaction_messages")
    assert forward["direction"] == "forward" and forward["count"] == 2
    assert abs(forward["matmul"] - f128["shape"]["edges"] * 270336) < 1e-6 * forward["matmul"]
    # The table kernels at F=128, per edge: (per-edge ops, per-channel ops) of the TTIR, i.e.
    # forward embedding 45 + 41F, interaction 34 + 38F; backward 91 + 79F and 42 + 82F.
    E, F = f128["shape"]["edges"], 128
    table = {(st["name"], st["direction"]): st for st in f128["variants"]["table"]["steps"]}
    for (name, direction), (per_edge, per_channel) in {
        ("embedding_messages (table)", "forward"): (45, 41), ("interaction_messages (table)", "forward"): (34, 38),
        ("embedding_messages (table)", "backward"): (91, 79), ("interaction_messages (table)", "backward"): (42, 82),
    }.items():
        other = table[(name, direction)]["other"]
        assert abs(other - E * (per_edge + per_channel * F)) < 1e-9 * other, (name, direction)
    # Gathered per edge: z_send (4F bytes) and 12 coefficient rows of F floats, 11 in the embedding
    # backward (the I group's value, hence c0, is dead there); features 40F, and gradients 40F more.
    assert table[("embedding_messages (table)", "forward")]["gathered"] == E * (4 * F + 48 * F)
    assert table[("embedding_messages (table)", "backward")]["gathered"] == E * (4 * F + 44 * F)
    assert table[("interaction_messages (table)", "forward")]["gathered"] == E * (40 * F + 48 * F)
    assert table[("interaction_messages (table)", "backward")]["gathered"] == E * (80 * F + 48 * F)
    # The table kernels' tiles have 4 slots: 1.5 padding slots per receiver on average.
    assert f128["shape"]["table_tiles_per_atom"] == (E + 1.5) / 4


def _achieved(tmp_path, model: str = "tensornet-64") -> dict:
    """``--achieved`` on a synthetic bench report: one water box of 1000 atoms with 10
    neighbours per atom, the model of preset ``model``, a few rows."""
    from fastnnp.bench.models import PRESETS, describe

    hparams = dict(PRESETS[model])
    rows = [
        {"backend": "fastnnp-torch", "status": "ok", "median_ms": 9.0},
        {"backend": "fastnnp-triton", "status": "ok", "median_ms": 0.5},
        {"backend": "fastnnp-triton-exact", "status": "ok", "median_ms": 2.0},
        {"backend": "fastnnp-triton-exact-tf32", "status": "ok", "median_ms": 2.0},
        {"backend": "fastnnp-triton-graph", "status": "oom"},
    ]
    bench = {
        "environment": {"device": "NVIDIA H200", "commit": "0" * 40},
        "config": {"model": model, "model_description": describe(hparams), "hparams": hparams},
        "systems": {"water-1000": {"n_atoms": 1000, "neighbors_per_atom": 10.0}},
        "results": [dict(row, system="water-1000", n_atoms=1000) for row in rows],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(bench))
    result = subprocess.run([sys.executable, str(SCRIPT), "--achieved", str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run_achieved.md").read_text().startswith("# Achieved rates")
    return json.loads((tmp_path / "run_achieved.json").read_text())


def test_achieved_rates_of_a_bench_report(tmp_path):
    report = _achieved(tmp_path)
    rows = {row["backend"]: row for row in report["rows"]}
    assert list(rows) == ["fastnnp-triton", "fastnnp-triton-exact", "fastnnp-triton-exact-tf32", "fastnnp-triton-graph"]
    assert rows["fastnnp-triton-graph"]["note"] == "not timed: oom"
    exact, tf32, table = rows["fastnnp-triton-exact"], rows["fastnnp-triton-exact-tf32"], rows["fastnnp-triton"]
    assert (exact["radial"], exact["precision"], tf32["radial"], tf32["precision"]) == ("mlp", "ieee", "mlp", "tf32")
    assert table["radial"] == "table"
    assert exact["shape"] == {"channels": 64, "layers": 2, "num_rbf": 32, "edges": 10.0, "table_pieces": 2048}
    hw = report["hardware"]
    for row in (exact, tf32, table):
        seconds = row["median_ms"] / 1e3
        assert row["flop_per_s"] == row["flops"] / seconds and row["bytes_per_s"] == row["bytes"] / seconds
        assert row["bandwidth_fraction"] == row["bytes_per_s"] / hw["bandwidth"]
        assert row["floor_fraction"] == row["floor_s"] / seconds
    # ieee: every FLOP at the fp32 rate.
    assert abs(exact["compute_fraction"] - exact["flop_per_s"] / hw["fp32_rate"]) < 1e-12
    # TF32 moves only the radial-MLP kernels' matmuls to the tf32 rate. By hand, per atom (F=64,
    # R=32, 2 layers, 10 edges): embedding 10 (6 + 12) R F = 368 640, interactions
    # 2 x 10 (2RF + 16F^2 + 4RF + 36F^2) = 4 505 600: 4 874 240 FLOPs x 1000 atoms.
    assert tf32["flops"] == exact["flops"] and tf32["bytes"] == exact["bytes"]
    saved_s = (exact["compute_fraction"] - tf32["compute_fraction"]) * 2e-3
    kernel_matmul = saved_s / (1 / hw["fp32_rate"] - 1 / hw["tf32_rate"])
    assert abs(kernel_matmul - 4_874_240 * 1000) < 1e-6 * kernel_matmul
    # The table variant has no kernel matmul: its matmul FLOPs are the torch GEMMs', by hand per
    # atom forward 2 (2F^2 + 2F^2 + 6F^2 + 3F^2 + F^2/2 + F/2) = 110 656, backward 94 272.
    assert table["matmul_flops"] == (110_656 + 94_272) * 1000
    assert exact["matmul_flops"] == (4_874_240 + 110_656 + 94_272) * 1000


def test_achieved_says_no_work_model_for_other_models(tmp_path):
    report = _achieved(tmp_path, model="gn-128")
    assert {row["note"] for row in report["rows"]} == {"no work model: model graph-network (counted: tensornet)"}
    assert "no work model" in (tmp_path / "run_achieved.md").read_text()
