"""The cell-grid steps shared by the two searches (fastnnp.neighbors.cells)."""

import numpy as np
import pytest
import torch

from fastnnp.neighbors.cells import bin_coords, bin_starts, cell_frame, cell_geometry, sort_into_bins

TRICLINIC = [[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 6.8]]
ORTHORHOMBIC = [[6.0, 0.0, 0.0], [0.0, 7.0, 0.0], [0.0, 0.0, 5.5]]


def atoms_around(boxes: torch.Tensor, batch: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Positions [N, 3] (float64) of atoms in and around their system's cell."""
    g = torch.Generator().manual_seed(seed)
    frac = torch.rand(batch.shape[0], 3, generator=g, dtype=torch.float64) * 3.0 - 1.0
    return torch.bmm(frac.unsqueeze(1), boxes[batch]).squeeze(1)


@pytest.mark.parametrize("batched", [False, True], ids=["one-product", "batched"])
@pytest.mark.parametrize("per_system", [False, True], ids=["shared", "per-system"])
def test_cell_frame_wraps_every_atom_into_its_cell(batched, per_system):
    boxes = torch.tensor([TRICLINIC, ORTHORHOMBIC], dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([30, 25]))
    if not per_system:
        boxes, batch = boxes[:1], torch.zeros(55, dtype=torch.long)
    pos = atoms_around(boxes, batch)
    frame = cell_frame(pos, batch, boxes[0] if not per_system else boxes, int(batch.max()) + 1, batched)

    assert frame.shift.dtype == torch.long and bool((frame.shift != 0).any())
    assert bool((frame.frac >= 0).all()) and bool((frame.frac < 1).all())
    cells = boxes[batch]
    shifted = torch.bmm(frame.shift.double().unsqueeze(1), cells).squeeze(1)
    torch.testing.assert_close(frame.wrapped, pos - shifted, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.bmm(frame.wrapped.unsqueeze(1), torch.linalg.inv(cells)).squeeze(1),
                               frame.frac, rtol=0, atol=1e-12)
    for s, cell in enumerate(np.asarray(boxes)):
        volume = abs(np.linalg.det(cell))
        heights = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
        assert float(frame.volume[s]) == pytest.approx(volume, rel=1e-14)
        np.testing.assert_allclose(frame.heights[s].numpy(), heights, rtol=1e-14)
        assert torch.equal(frame.boxes[s], boxes[s])


def test_cell_geometry_matches_linalg():
    """Inverse, volume and heights from cross products equal torch.linalg's (no host check)."""
    boxes = torch.tensor(TRICLINIC, dtype=torch.float64)[None] * torch.tensor([1.0, -0.5, 3.0], dtype=torch.float64)[:, None, None]
    inverse, volume, heights = cell_geometry(boxes)
    torch.testing.assert_close(inverse, torch.linalg.inv(boxes), rtol=1e-13, atol=0)
    torch.testing.assert_close(volume, torch.linalg.det(boxes).abs(), rtol=1e-13, atol=0)
    for k in range(3):
        face = torch.linalg.cross(boxes[:, (k + 1) % 3], boxes[:, (k + 2) % 3]).norm(dim=1)
        torch.testing.assert_close(heights[:, k], volume / face, rtol=1e-13, atol=0)


def test_shared_box_arithmetic_is_chosen_by_batched():
    """One product with the shared cell (the cell list's) or a batched one per atom (the
    Triton search's): each exactly as written, so each search keeps its own rounding."""
    box = torch.tensor(TRICLINIC, dtype=torch.float64)
    batch = torch.zeros(80, dtype=torch.long)
    pos = atoms_around(box[None], batch, seed=3)
    one = cell_frame(pos, batch, box, 1, batched=False)
    per_atom = cell_frame(pos, batch, box, 1, batched=True)
    inverse = cell_geometry(box[None])[0]
    frac = pos @ inverse[0]
    assert torch.equal(one.frac, frac - torch.floor(frac))
    assert torch.equal(one.wrapped, pos - torch.floor(frac) @ box)
    inv = inverse.index_select(0, batch)
    frac = torch.bmm(pos.unsqueeze(1), inv).squeeze(1)
    assert torch.equal(per_atom.frac, frac - torch.floor(frac))
    cells = box[None].expand(1, 3, 3).index_select(0, batch)
    assert torch.equal(per_atom.wrapped, pos - torch.bmm(torch.floor(frac).unsqueeze(1), cells).squeeze(1))


def test_cell_frame_wraps_only_the_given_axes():
    box = torch.tensor(TRICLINIC, dtype=torch.float64)
    batch = torch.zeros(40, dtype=torch.long)
    pos = atoms_around(box[None], batch, seed=5)
    wrap = torch.tensor([True, False, True])
    frame = cell_frame(pos, batch, box, 1, batched=False, wrap=wrap)
    full = cell_frame(pos, batch, box, 1, batched=False)
    assert bool((frame.shift[:, 1] == 0).all()) and torch.equal(frame.shift[:, [0, 2]], full.shift[:, [0, 2]])
    assert torch.equal(frame.frac[:, 1], (pos @ torch.linalg.inv(box))[:, 1])
    assert torch.equal(frame.frac[:, [0, 2]], full.frac[:, [0, 2]])


def test_bin_coords_are_clamped_to_the_grid():
    nbins = torch.tensor([[3.0, 1.0, 4.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    batch = torch.tensor([0, 0, 1, 1])
    u = torch.tensor([[-0.5, 0.2, 3.99], [3.0, 7.0, 1.5], [1.999, -3.0, 2.0], [0.0, 1.0, 0.5]], dtype=torch.float64)
    expected = torch.tensor([[0, 0, 3], [2, 0, 1], [1, 0, 1], [0, 1, 0]])
    assert torch.equal(bin_coords(u, nbins, batch), expected)


def test_atoms_sorted_into_bins_form_one_range_per_bin():
    g = torch.Generator().manual_seed(2)
    nbins = torch.tensor([[3, 2, 4], [1, 5, 2]])
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([50, 30]))
    coords = torch.stack([torch.randint(0, int(nbins[s, k]), (1,), generator=g)[0]
                          for s in batch.tolist() for k in range(3)]).reshape(-1, 3)
    binned = sort_into_bins(coords, nbins, batch)
    assert binned.n_bins == 3 * 2 * 4 + 1 * 5 * 2
    assert binned.base.tolist() == [0, 24]
    n = nbins[batch]
    expected = binned.base[batch] + (coords[:, 0] * n[:, 1] + coords[:, 1]) * n[:, 2] + coords[:, 2]
    assert torch.equal(binned.key, expected)
    assert torch.equal(binned.order, torch.argsort(expected, stable=True))
    start = bin_starts(binned.key, binned.n_bins)
    assert start.shape == (binned.n_bins + 1,) and int(start[0]) == 0 and int(start[-1]) == 80
    sorted_keys = binned.key[binned.order]
    for k in range(binned.n_bins):
        assert bool((sorted_keys[start[k]:start[k + 1]] == k).all())
        assert int(start[k + 1] - start[k]) == int((binned.key == k).sum())
