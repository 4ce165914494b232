"""The fused binning op (fastnnp.kernels.common.atom_bins) against its torch reference under
the interpreter: the same sorted atoms, bins, shifts and bin starts, wrapped positions equal to
float64 rounding, and the same STALE / DRIFT flags."""

import pytest
import torch

from fastnnp.kernels.common import atom_bins
from fastnnp.kernels.common.atom_bins import bin_atoms, reference_bins
from fastnnp.kernels.common.neighbor_search import plan_search
from tests.kernels.common.test_neighbor_search import inside, random_box


@pytest.fixture(params=["gpu-block", "interpreter-block"])
def block(request, monkeypatch):
    if request.param == "gpu-block":
        monkeypatch.setattr(atom_bins, "INTERPRETER_BLOCK", atom_bins.GPU_BLOCK)


def _systems(kind: str, dtype=torch.float32):
    gen = torch.Generator().manual_seed(8)
    if kind == "open":
        pos = torch.randn(150, 3, generator=gen, dtype=torch.float64) * 4
        return pos.to(dtype), torch.zeros(150, dtype=torch.long), None
    boxes = torch.stack([random_box(gen, 9.0), random_box(gen, 8.0)])
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([140, 100]))
    box = boxes if kind == "per-system" else boxes[0]
    # some atoms outside their cell, on both sides
    pos = torch.cat([inside(gen, 140, boxes[0]), inside(gen, 100, boxes[int(kind == "per-system")])]) * 1.4 - 3.0
    return pos.to(dtype), batch, box.to(dtype)


def _compare(plan, pos, box):
    got, got_stale, got_drift = bin_atoms(plan, pos, box)
    ref, ref_stale, ref_drift = reference_bins(plan, pos, box)
    for name in ("atom", "bin", "shift", "sys", "box", "bin_start"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    # the same float64 arithmetic in another order, rounded to the kernel dtype: a few ulps at |x| < 16
    torch.testing.assert_close(got.pos, ref.pos, rtol=0, atol=4 * 16 * torch.finfo(got.pos.dtype).eps)
    assert got.pos.dtype == ref.pos.dtype
    assert bool(got_stale) == bool(ref_stale) and bool(got_drift) == bool(ref_drift)
    return got, got_stale, got_drift


@pytest.mark.parametrize("kind", ["open", "shared", "per-system"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bins_match_reference(block, kind, dtype):
    pos, batch, box = _systems(kind, dtype)
    plan = plan_search(pos, batch, 3.0, 0.0, box)
    bins, _, _ = _compare(plan, pos, box)
    if box is not None:
        assert bool(bins.shift.any())  # the wrapping was exercised


def test_drift_flagged_for_open_atoms_off_the_grid(block):
    pos, batch, _ = _systems("open")
    plan = plan_search(pos, batch, 3.0, 0.0, None)
    moved = pos.clone()
    moved[3] += 100.0
    _, stale, drift = _compare(plan, moved, None)
    assert bool(drift) and not bool(stale)


def test_stale_flagged_when_the_cell_shrinks(block):
    pos, batch, box = _systems("shared")
    plan = plan_search(pos, batch, 3.0, 0.0, box)
    _, stale, drift = _compare(plan, pos * 0.7, box * 0.7)
    assert bool(stale) and not bool(drift)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, on the NaN
def test_non_finite_positions_stay_on_the_grid(block):
    """A NaN or inf position (flagged by the step, not here) still gets a bin inside the grid."""
    pos, batch, box = _systems("shared")
    plan = plan_search(pos, batch, 3.0, 0.0, box)
    bad = pos.clone()
    bad[0] = float("nan")
    bad[1, 2] = float("inf")
    bins, _, _ = bin_atoms(plan, bad, box)
    assert bool((bins.bin >= 0).all()) and bool((bins.bin < plan.nbins_int[bins.sys.long()]).all())
    assert int(bins.bin_start[-1]) == pos.shape[0]
