"""The padded per-receiver table (fastnnp.neighbors.table) and its converter from a neighbour list."""

import pytest
import torch

import fastnnp.kernels.common.neighbor_search as neighbor_search
from fastnnp.neighbors import NeighborTable, neighbor_list, table_from_list
from fastnnp.neighbors.table import table_vectors

TRICLINIC = [[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 6.8]]


def system(kind: str):
    """(pos, batch, box) of 40 atoms: "open" (two molecules) or "periodic" (a triclinic cell)."""
    g = torch.Generator().manual_seed(1)
    if kind == "open":
        pos = torch.randn(40, 3, generator=g, dtype=torch.float64) * 2.0
        return pos, torch.repeat_interleave(torch.arange(2), torch.tensor([25, 15])), None
    box = torch.tensor(TRICLINIC, dtype=torch.float64)
    pos = torch.rand(40, 3, generator=g, dtype=torch.float64) @ box
    return pos, torch.zeros(40, dtype=torch.long), box


@pytest.mark.parametrize("kind", ["open", "periodic"])
def test_table_from_list_holds_the_lists_pairs_in_order(kind):
    pos, batch, box = system(kind)
    graph = neighbor_list(pos, batch, 3.5, box=box)
    n = pos.shape[0]
    table = table_from_list(graph, n)
    receiver = graph.edge_index[0]
    counts = torch.bincount(receiver, minlength=n)
    assert table.neighbors.dtype == table.images.dtype == table.counts.dtype == torch.int32
    assert table.neighbors.shape == (n, int(counts.max())) and table.images.shape == (n, int(counts.max()), 3)
    assert torch.equal(table.counts, counts.to(torch.int32))
    used = torch.arange(table.neighbors.shape[1]) < table.counts[:, None]
    assert torch.equal(table.neighbors[used], graph.edge_index[1].to(torch.int32))
    assert torch.equal(table.images[used], graph.image.to(torch.int32))
    rows = torch.arange(n, dtype=torch.int32)[:, None].expand_as(table.neighbors)
    assert torch.equal(table.neighbors[~used], rows[~used])
    assert not bool(table.images[~used].any())
    if kind == "periodic":
        assert bool(table.images.any())
    vec = table_vectors(table, pos, batch, box)
    torch.testing.assert_close(vec[used], graph.edge_vec, rtol=0, atol=1e-12)
    assert not bool(vec[~used].any())


def test_capacity_sets_the_width():
    pos, batch, box = system("periodic")
    graph = neighbor_list(pos, batch, 3.5, box=box)
    narrow = table_from_list(graph, 40)
    wide = table_from_list(graph, 40, capacity=narrow.neighbors.shape[1] + 3)
    assert wide.neighbors.shape[1] == narrow.neighbors.shape[1] + 3
    assert torch.equal(wide.neighbors[:, : narrow.neighbors.shape[1]], narrow.neighbors)
    assert torch.equal(wide.images[:, : narrow.neighbors.shape[1]], narrow.images)
    assert torch.equal(wide.counts, narrow.counts)


def test_isolated_atoms_give_a_table_of_padding():
    pos = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    table = table_from_list(neighbor_list(pos, torch.zeros(2, dtype=torch.long), 2.0), 2)
    assert table.neighbors.tolist() == [[0], [1]] and table.counts.tolist() == [0, 0]


def test_the_triton_search_module_re_exports_the_table():
    assert neighbor_search.NeighborTable is NeighborTable
    assert neighbor_search.table_vectors is table_vectors
