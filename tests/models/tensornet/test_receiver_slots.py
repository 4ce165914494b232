"""The receiver layout of a half list's directed edges."""

import torch

from fastnnp.models.tensornet.receiver_slots import edge_rows, receiver_slots


def _directed(first, second):
    """(receiver, sender, pair, sign) of every directed edge, as a sorted list."""
    n = len(first)
    edges = [(int(first[p]), int(second[p]), p, 1.0) for p in range(n)]
    edges += [(int(second[p]), int(first[p]), p, -1.0) for p in range(n)]
    return sorted(edges)


def test_every_directed_edge_has_one_slot_in_its_receivers_row():
    torch.manual_seed(3)
    n_atoms = 7
    first = torch.randint(0, n_atoms, (23,))
    second = torch.randint(0, n_atoms, (23,))
    first[:2] = second[:2]  # an atom's own periodic image: both edges in one row
    slots = receiver_slots(first, second, n_atoms, torch.float64)
    degree = torch.bincount(torch.cat((first, second)), minlength=n_atoms)
    assert slots.pair.shape == (n_atoms, int(degree.max()))
    filled = slots.sign != 0
    assert torch.equal(filled.sum(1), degree)
    assert torch.equal(filled, torch.arange(slots.pair.shape[1]) < degree[:, None])  # padding at the row's end
    found = sorted(
        (n, int(slots.sender[n, k]), int(slots.pair[n, k]), float(slots.sign[n, k]))
        for n, k in filled.nonzero().tolist()
    )
    assert found == _directed(first, second)
    # an edge's receiver is the pair end its sign names
    for n, k in filled.nonzero().tolist():
        p = slots.pair[n, k]
        assert n == (first[p] if slots.sign[n, k] > 0 else second[p])


def test_no_pairs_gives_rows_of_width_zero():
    empty = torch.zeros(0, dtype=torch.long)
    slots = receiver_slots(empty, empty, 4, torch.float32)
    assert all(t.shape == (4, 0) for t in slots)


def test_edge_rows_are_the_directed_edges_one_a_row():
    first, second = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1])
    rows, receiver = edge_rows(first, second, torch.float64)
    found = sorted(
        (int(receiver[r]), int(rows.sender[r, 0]), int(rows.pair[r, 0]), float(rows.sign[r, 0])) for r in range(6)
    )
    assert found == _directed(first, second)
