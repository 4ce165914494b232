"""bench/work_model.py writes its report, its floors follow max(bytes / bandwidth, FLOPs / rate)
summed over the steps, and its radial-MLP count matches one worked by hand."""

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
