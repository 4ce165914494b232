"""Every kernel compiles for an H100 (sm_90) and fits its shared memory — checked without a GPU,
because the interpreter cannot see what only the GPU compiler rejects. The same run (at F=64 and
F=128) writes the resource report; the occupancy arithmetic is checked against hand-worked cases."""

import json
import subprocess
import sys

import pytest

from fastnnp.kernels.common.occupancy import occupancy
from fastnnp.kernels.common.resources import PtxasFigures, parse_ptxas_log

# Compile cases at each feature width: the binning (2 kernels, periodic and open; the cell kernel), the neighbour
# search (its table in the given and in the sorted order), the embedding's and the interactions' message
# kernels (radial MLP and radial table, forward and backward each), the four update kernels, the
# channel-mixing GEMM, the six atom-tensor kernels and the edge vectors (forward, backward); the
# continuous-filter convolution (three filter kinds x forward add and max, mean backward, max backward) and
# the ET attention (exact and table x forward, receiver and sender backward); TensorNet2's charged message
# kernel (forward, backward).
KERNELS = 4 + 1 + 2 + 8 + 4 + 1 + 6 + 2 + 12 + 6 + 2


def test_kernels_compile_for_h100(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastnnp.kernels.compile_check", "--arch", "90", "--channels", "64", "128",
         "--report", str(tmp_path)],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = {}  # width -> kernels that compiled and fit
    for line in result.stdout.splitlines():
        if line.startswith("F="):
            width = passed.setdefault(int(line[2:].split(",")[0]), [])
        elif line.endswith("(ok)"):
            width.append(line.split(":")[0])
    assert {w: len(names) for w, names in passed.items()} == {64: KERNELS, 128: KERNELS}, result.stdout
    assert result.stdout.count("(ok)") == 2 * KERNELS, result.stdout

    report = json.loads((tmp_path / "kernel_resources.json").read_text())
    rows = report["kernels"]
    assert [(r["channels"], r["kernel"]) for r in rows] == [(w, n) for w, names in passed.items() for n in names]
    for r in rows:
        assert r["registers"] > 0 and 0 < r["occupancy"] <= 1, r
        assert r["spill_stores"] >= 0 and r["spill_loads"] >= 0 and r["stack_frame"] >= 0, r
        assert r["occupancy"] == occupancy(r["registers"], r["shared"], r["num_warps"]).fraction, r
    table = [line for line in (tmp_path / "kernel_resources.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(rows)  # header, separator, one line per case


@pytest.mark.parametrize(
    "registers, shared, num_warps, blocks, limited_by",
    [
        # 255 -> 256 registers: 8192 per warp, 8 warps = 2 blocks; 215040 + 1024 B: 1 block of 228 KiB.
        (255, 215040, 4, 1, ("shared memory",)),
        # 40 x 32 = 1280 per warp: 51 warps, 12 blocks of 4 (threads allow 16).
        (40, 0, 4, 12, ("registers",)),
        # 1024 per warp: 64 warps = 16 blocks, also all 2048 threads.
        (32, 0, 4, 16, ("registers", "threads")),
        # 107 -> 112 registers: 3584 per warp, 18 warps (19 without the rounding).
        (107, 32, 1, 18, ("registers",)),
        # 128 warps by registers, 64 by threads: the 32-block limit.
        (16, 0, 1, 32, ("blocks",)),
        # 45666 + 1024 = 46690 -> 46720 B in units of 128: 4 blocks (5 without the rounding).
        (32, 45666, 1, 4, ("shared memory",)),
        # 116000 + 1024 reserved -> 117120 B: 1 block (2 without the reserved KiB).
        (32, 116000, 4, 1, ("shared memory",)),
        # Over 227 KiB per block (with the reserved KiB more than the SM has), or 16 warps x 8192
        # registers > 65536: no block fits.
        (32, 232449, 4, 0, ("shared memory",)),
        (255, 0, 16, 0, ("registers",)),
    ],
)
def test_occupancy_by_hand(registers, shared, num_warps, blocks, limited_by):
    result = occupancy(registers, shared, num_warps)
    assert (result.blocks, result.warps, result.limited_by) == (blocks, blocks * num_warps, limited_by)
    assert result.fraction == blocks * num_warps / 64


def test_ptxas_log_parses():
    log = (
        "ptxas info    : 52 bytes gmem\n"
        "ptxas info    : Compiling entry function '_backward_kernel' for 'sm_90a'\n"
        "ptxas info    : Function properties for _backward_kernel\n"
        "    1992 bytes stack frame, 2288 bytes spill stores, 2672 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 1992 bytes cumulative stack size\n"
    )
    assert parse_ptxas_log(log) == PtxasFigures(registers=255, spill_stores=2288, spill_loads=2672, stack_frame=1992)
    with pytest.raises(ValueError, match="no register"):
        parse_ptxas_log("ptxas info    : 0 bytes gmem\n")
