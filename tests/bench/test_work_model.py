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
