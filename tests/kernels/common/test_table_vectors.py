"""The fused edge-vector op (fastnnp.kernels.common.table_vectors) against its float64 torch
reference (fastnnp.neighbors.table.table_vectors) under the interpreter: vectors, their
padding zeros, and the gradients in positions and cells (open, one shared box, a box per system;
the GPU's slot and atom blocks too)."""

import pytest
import torch

from fastnnp.kernels.common import table_vectors as module
from fastnnp.neighbors.cell_list import neighbor_list
from fastnnp.kernels.common.table_vectors import table_vectors
from fastnnp.neighbors.table import NeighborTable, table_from_list
from fastnnp.neighbors.table import table_vectors as reference_vectors
from tests.kernels.common.test_neighbor_search import inside, random_box


@pytest.fixture(params=["gpu-block", "interpreter-block"])
def block(request, monkeypatch):
    if request.param == "gpu-block":
        monkeypatch.setattr(module, "INTERPRETER_BLOCK_ATOMS", module.GPU_BLOCK_ATOMS)
        monkeypatch.setattr(module, "MAX_BLOCK_SLOTS", 4)  # several slot blocks per row


def _systems(kind: str):
    gen = torch.Generator().manual_seed(3)
    if kind == "open":
        pos = torch.randn(90, 3, generator=gen, dtype=torch.float64) * 3
        return pos, torch.zeros(90, dtype=torch.long), None
    boxes = torch.stack([random_box(gen, 7.0), random_box(gen, 6.5)])
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([70, 50]))
    box = boxes if kind == "per-system" else boxes[:1]
    pos = torch.cat([inside(gen, 70, boxes[0]), inside(gen, 50, boxes[int(kind == "per-system")])]) * 1.3 - 2.0
    return pos, batch, box


def _table(pos, batch, box) -> NeighborTable:
    table = table_from_list(neighbor_list(pos, batch, 3.2, 0.0, box), len(pos))
    assert int(table.counts.max()) > 4 and bool((table.counts < table.neighbors.shape[1]).any())  # padding exists
    if box is not None:
        assert bool(table.images.any())  # periodic images exercised
    return table


@pytest.mark.parametrize("kind", ["open", "shared", "per-system"])
def test_vectors_and_gradients_match_float64_reference(block, kind):
    pos64, batch, box64 = _systems(kind)
    table = _table(pos64, batch, box64)
    pos, box = pos64.float().requires_grad_(True), None if box64 is None else box64.float().requires_grad_(True)
    ref_pos = pos64.clone().requires_grad_(True)
    ref_box = None if box64 is None else box64.clone().requires_grad_(True)

    got = table_vectors(table, pos, batch, box)
    want = reference_vectors(table, ref_pos, batch, ref_box)
    scale = 16 * torch.finfo(torch.float32).eps  # |x| < 16 Å: a few ulps of the coordinates
    torch.testing.assert_close(got.double(), want, rtol=0, atol=scale)
    padding = torch.arange(table.neighbors.shape[1]) >= table.counts[:, None]
    assert bool((got[padding] == 0).all())

    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = (pos,) if box is None else (pos, box)
    ref_inputs = (ref_pos,) if box is None else (ref_pos, ref_box)
    grads = torch.autograd.grad((got * weights.float()).sum(), inputs)
    ref_grads = torch.autograd.grad((want * weights).sum(), ref_inputs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-4 * float(r.abs().max()))


def test_float64_is_refused():
    pos, batch, _ = _systems("open")
    with pytest.raises(ValueError, match="float32 only"):
        table_vectors(_table(pos, batch, None), pos, batch, None)


def test_opcheck():
    pos64, batch, box64 = _systems("per-system")
    table = _table(pos64, batch, box64)
    args = (pos64.float().requires_grad_(True), table.neighbors, table.images, table.counts, batch,
            box64.float().requires_grad_(True))
    torch.library.opcheck(torch.ops.fastnnp.table_vectors, args)
