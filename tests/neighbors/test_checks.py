"""Input checks of the searches and the singular-cell rule (fastnnp.neighbors.checks)."""

import math

import pytest
import torch

from fastnnp.neighbors.checks import SINGULAR_VOLUME_RATIO, check_search_inputs, singular_cells


def sheared(length: float, ratio: float) -> torch.Tensor:
    """Rows (L, 0, 0), (0, L, 0), (L/2, L/2, h) with volume / (|a| |b| |c|) = ratio."""
    h = ratio * length / math.sqrt(2)
    return torch.tensor([[length, 0, 0], [0, length, 0], [length / 2, length / 2, h]], dtype=torch.float64)


def test_singular_cells_rule():
    assert SINGULAR_VOLUME_RATIO == 1e-10
    cells = torch.stack([
        torch.eye(3, dtype=torch.float64),
        torch.zeros(3, 3, dtype=torch.float64),
        torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.float64),  # flat
        torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.float64),  # a zero row
        sheared(10.0, 3e-10),
        sheared(10.0, 3e-11),
        -torch.eye(3, dtype=torch.float64),  # left-handed
    ])
    assert singular_cells(cells).tolist() == [False, True, True, True, False, True, False]


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_singular_cells_does_not_depend_on_the_length_unit(scale):
    cells = torch.stack([sheared(1.0, 3e-10), sheared(1.0, 3e-11)]) * scale
    assert singular_cells(cells).tolist() == [False, True]


def test_check_search_inputs_normalises():
    pos = torch.rand(5, 3)
    out_pos, batch, box, pbc, cu, cl = check_search_inputs(pos, None, 3, 1, torch.eye(3)[None] * 4, None)
    assert out_pos is pos and torch.equal(batch, torch.zeros(5, dtype=torch.long))
    assert box.shape == (3, 3) and pbc == [True, True, True]
    assert (cu, cl) == (3.0, 1.0) and type(cu) is float and type(cl) is float
    _, batch, box, pbc, _, _ = check_search_inputs(pos, torch.tensor([0, 0, 1, 1, 1], dtype=torch.int32), 3.0, 0.0,
                                                   None, None)
    assert batch.dtype == torch.long and box is None and pbc == [False, False, False]
    boxes = torch.eye(3).expand(3, 3, 3) * 5
    _, _, box, pbc, _, _ = check_search_inputs(pos, torch.tensor([0, 0, 1, 1, 1]), 3.0, 0.0, boxes, (1, 0, 1))
    assert box.shape == (3, 3, 3) and pbc == [True, False, True]


def test_check_search_inputs_refuses_a_box_the_rule_calls_singular():
    pos = torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"box is singular \(zero or near-zero volume\)"):
        check_search_inputs(pos, None, 2.0, 0.0, sheared(10.0, 3e-11), None)
    with pytest.raises(ValueError, match=r"box is singular.*\(system 1\)"):
        check_search_inputs(pos, None, 2.0, 0.0, torch.stack([torch.eye(3), sheared(10.0, 3e-11).float()]), None)
    check_search_inputs(pos, None, 2.0, 0.0, sheared(10.0, 3e-10), None)  # accepted
