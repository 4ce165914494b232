"""Edge vectors, lengths and the exact cutoff test (fastnnp.neighbors.edges)."""

import torch

from fastnnp.neighbors import neighbor_list
from fastnnp.neighbors.edges import edge_vectors, safe_norm, within_cutoffs

TRICLINIC = [[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 6.8]]


def periodic_batch():
    """(pos, batch, boxes) of two periodic systems with their own cells, float64."""
    g = torch.Generator().manual_seed(0)
    boxes = torch.stack([torch.tensor(TRICLINIC), torch.diag(torch.tensor([4.0, 5.0, 4.5]))]).double()
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([20, 15]))
    frac = torch.rand(35, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2
    return torch.bmm(frac.unsqueeze(1), boxes[batch]).squeeze(1), batch, boxes


def test_edge_vectors_of_both_directions_are_exactly_opposite():
    pos, batch, boxes = periodic_batch()
    graph = neighbor_list(pos, batch, 4.0, box=boxes)
    i, j = graph.edge_index
    forward = edge_vectors(pos, boxes, batch, i, j, graph.image)
    backward = edge_vectors(pos, boxes, batch, j, i, -graph.image)
    assert bool(graph.image.any()) and torch.equal(forward, -backward)
    assert torch.equal(forward, graph.edge_vec)
    expected = pos[i] - pos[j] - torch.bmm(graph.image.double().unsqueeze(1), boxes[batch[i]]).squeeze(1)
    torch.testing.assert_close(forward, expected, rtol=0, atol=1e-12)


def test_edge_vectors_sparse_and_dense_images_agree():
    """Few edges with an image take the sparse path, many the dense one: same values."""
    pos, batch, boxes = periodic_batch()
    i = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    j = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    image = torch.zeros(8, 3, dtype=torch.long)
    image[2] = torch.tensor([1, 0, -1])
    sparse = edge_vectors(pos, boxes, batch, i, j, image)
    dense = edge_vectors(pos, boxes, batch, i[[2, 2, 2]], j[[2, 2, 2]], image[[2, 2, 2]])
    assert torch.equal(sparse[2], dense[0])
    assert torch.equal(sparse[[0, 1, 3]], pos[i[[0, 1, 3]]] - pos[j[[0, 1, 3]]])


def test_safe_norm_has_a_zero_gradient_at_zero():
    vec = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64, requires_grad=True)
    length = safe_norm(vec)
    assert length.tolist() == [0.0, 5.0]
    (grad,) = torch.autograd.grad(length.sum(), vec)
    assert grad[0].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(grad[1], torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))


def test_within_cutoffs_filters_a_wider_list_into_the_list():
    """Candidates of a wider search, filtered exactly, are the list of the narrower cutoffs
    (the rule VerletNeighborList relies on)."""
    pos, batch, boxes = periodic_batch()
    for dtype in (torch.float32, torch.float64):
        p, b = pos.to(dtype), boxes.to(dtype)
        wide = neighbor_list(p, batch, 4.5, 0.5, box=b)
        keep = within_cutoffs(p, b, batch, wide.edge_index[0], wide.edge_index[1], wide.image, 1.0, 4.0)
        narrow = neighbor_list(p, batch, 4.0, 1.0, box=b)
        assert not bool(keep.all())
        assert torch.equal(wide.edge_index[:, keep], narrow.edge_index)
        assert torch.equal(wide.image[keep], narrow.image)
        assert torch.equal(wide.edge_weight[keep], narrow.edge_weight)
