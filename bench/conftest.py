"""Benchmark set-up. Without a CUDA device the Triton kernels can only run under Triton's CPU
interpreter, which must be switched on before any ``triton.jit`` decorator runs (as in
``tests/conftest.py``); an explicit ``TRITON_INTERPRET`` in the environment is kept.

Shared fixtures: the device, whether the Triton kernels can run on it, and periodic water
boxes with their neighbour list and neighbour table (1k, 10k, 100k atoms on CUDA; one tiny
box on CPU).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from typing import NamedTuple  # noqa: E402

import pytest  # noqa: E402
from torch import Tensor  # noqa: E402

from fastnnp.kernels import interpreting  # noqa: E402
from fastnnp.neighbors import NeighborList, NeighborTable, neighbor_list, table_from_list  # noqa: E402
from fastnnp.systems import water_box  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUTOFF = 5.0
# Atoms per water box: real sizes on a GPU, one tiny box under the interpreter (numpy per
# program) or for the torch side alone on CPU.
SIZES = [1_000, 10_000, 100_000] if DEVICE.type == "cuda" and not interpreting() else [30]


class System(NamedTuple):
    """A periodic water box on ``DEVICE`` (float32) with its pure-torch neighbour list and the
    same pairs as a neighbour table, the message kernels' input (independent of the search kernel)."""

    name: str
    cutoff: float
    z: Tensor
    pos: Tensor
    batch: Tensor
    box: Tensor
    graph: NeighborList
    table: NeighborTable


def _table(graph: NeighborList, n: int) -> NeighborTable:
    """The neighbour list (sorted by receiver) as a table of width max(counts); padding = self."""
    return table_from_list(graph, n)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session")
def cutoff() -> float:
    return CUTOFF


@pytest.fixture(scope="session")
def triton_missing() -> str | None:
    """Why the Triton kernels cannot run here, or None when they can."""
    if DEVICE.type == "cuda" or interpreting():
        return None
    return "Triton kernels need a CUDA device or the CPU interpreter (TRITON_INTERPRET=1); neither is available"


@pytest.fixture(scope="session", params=SIZES, ids=[f"water-{n}" for n in SIZES])
def system(request) -> System:
    atoms = water_box(request.param)
    pos = torch.tensor(atoms.positions, dtype=torch.float32, device=DEVICE)
    box = torch.tensor(atoms.cell.array, dtype=torch.float32, device=DEVICE)
    batch = torch.zeros(len(atoms), dtype=torch.long, device=DEVICE)
    z = torch.tensor(atoms.numbers, dtype=torch.long, device=DEVICE)
    graph = neighbor_list(pos, batch, CUTOFF, box=box, loop=False)
    return System(f"water-{request.param}", CUTOFF, z, pos, batch, box, graph, _table(graph, len(atoms)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
