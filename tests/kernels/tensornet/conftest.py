"""Shared set-up of the TensorNet message-kernel tests: both tile shapes, random-weight models
and the edges of small systems' neighbour tables."""

from typing import Callable

import pytest
import torch
from torch import Tensor

from fastnnp.kernels.common import edge_math
from fastnnp.kernels.common.neighbor_search import NeighborTable
from fastnnp.kernels.tensornet import atom_blocks
from fastnnp.kernels.tensornet.reference import Edges, table_edges
from fastnnp.models.tensornet.reference import TensorNet
from tests.helpers.kernel_cases import CUTOFF, random_system, reference_table


@pytest.fixture(params=[(4, 32), (64, 32)], ids=["gpu-block", "interpreter-block"])
def block(request, monkeypatch):
    """Run each per-atom kernel with the block the GPU uses and with the interpreter's."""
    monkeypatch.setattr(atom_blocks, "INTERPRETER_BLOCK_ATOMS", request.param[0])
    monkeypatch.setattr(atom_blocks, "BLOCK_CHANNELS", request.param[1])


@pytest.fixture(params=[edge_math.GPU_TILE, edge_math.INTERPRETER_TILE], ids=["gpu-tile", "interpreter-tile"])
def tile(request, monkeypatch):
    """Run each kernel with the tile shape the GPU uses and with the interpreter's."""
    monkeypatch.setattr(edge_math, "INTERPRETER_TILE", request.param)


def _model(hidden: int, rbf: str, activation: str, cutoff_lower: float) -> TensorNet:
    torch.manual_seed(3)
    model = TensorNet(
        hidden_channels=hidden, num_layers=1, num_rbf=12, rbf_type=rbf, activation=activation,
        cutoff_lower=cutoff_lower, cutoff_upper=CUTOFF, max_z=10,
    )
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    return model.requires_grad_(False)


def _edges(kind: str, cutoff_lower: float) -> tuple[NeighborTable, Tensor, Edges]:
    _, pos, batch, box = random_system(kind)
    table, vec = reference_table(pos, batch, box, cutoff_lower=cutoff_lower)
    return table, vec, table_edges(table.neighbors, table.counts)


@pytest.fixture
def random_model() -> Callable[[int, str, str, float], TensorNet]:
    """``(hidden, rbf, activation, cutoff_lower) ->`` a one-layer TensorNet (seeded, float32,
    frozen) with its weights perturbed off their initial values."""
    return _model


@pytest.fixture
def system_edges() -> Callable[[str, float], tuple[NeighborTable, Tensor, Edges]]:
    """``(kind, cutoff_lower) ->`` (table, vec [N, K, 3], edges) of a small system's reference table."""
    return _edges
