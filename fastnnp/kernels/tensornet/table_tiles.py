"""Tile, warps and compile cases of TensorNet's radial-table message kernels
(:mod:`~fastnnp.kernels.tensornet.embedding_messages`, :mod:`~fastnnp.kernels.tensornet.interaction_messages`).

Without the radial MLP a program holds no [M, 2F] hidden tile and stages no weights (no shared
memory for ``tl.dot``), so registers alone set the occupancy, and they grow with the elements
each thread holds per tile (ROWS x SLOTS x BF / threads) times the tiles in flight: the compiler
issues a step's gathers together (the backward of the interactions has about 40 [M, BF] tiles:
coefficient rows, the senders' features and gradients, the receiver's gradient). Measured on
sm_90 (ptxas, F=64 / F=128, registers and theoretical occupancy, interaction backward being the
tightest):

* (1, 16), 4 warps (the MLP kernels' tile): 255 / 255 registers with spills in both backward
  kernels, 12.5 % occupancy;
* (1, 16), 8 warps: 128 / 255 registers, spills in the interaction backward;
* (1, 8), 8 warps: 128 / 128 with spills in the interaction backward;
* (1, 4), 8 warps: no spills in any table kernel, interaction backward 75 / 110 registers
  (37.5 % / 25 %), embedding backward 62 / 107 (50 % / 25 %), forward kernels 40-58 registers
  (50-75 %) — the tile used here;
* (1, 2), 4 warps: as good at F=128 backward (123 registers) with half the edges per program step.

``bench/results/kernel_resources.md`` has the figures of the chosen tile.
"""

import triton

from ..common.compile_case import CompileCase
from ..common.edge_math import tile_shape
from ..common.radial_table import TABLE_FLOAT_SCALARS, KernelTable

# (receivers per program, slots per step) on the GPU, and warps per program.
TABLE_GPU_TILE = (1, 4)
TABLE_NUM_WARPS = 8


def table_compile_cases(forward, backward, channels: int) -> list[CompileCase]:
    """Forward and backward table kernels at production shape: rate > 0 (expnorm bases), no
    lower cutoff, the GPU tile."""
    rows, slots = TABLE_GPU_TILE
    meta = dict(RATE=True, ZERO_OUTSIDE=True, HAS_LOWER=False, ROWS=rows, SLOTS=slots,
                BF=triton.next_power_of_2(channels))
    pointers = {"nbr_ptr": "*i32", "counts_ptr": "*i32"}
    return [CompileCase(fn, meta, pointers, TABLE_FLOAT_SCALARS, TABLE_NUM_WARPS) for fn in (forward, backward)]


def table_launch(table: KernelTable, n_rows: int, K: int) -> tuple[tuple, tuple, tuple, dict]:
    """(grid, parameter arguments, scalar arguments, meta) of a table message kernel on a
    [``n_rows``, ``K``] neighbour table: this platform's tile, :data:`TABLE_NUM_WARPS` warps."""
    rows, slots = tile_shape(TABLE_GPU_TILE)
    F = table.channels // 3
    meta = dict(**table.constexprs(), ROWS=rows, SLOTS=slots, BF=max(16, triton.next_power_of_2(F)),
                num_warps=TABLE_NUM_WARPS)
    return (triton.cdiv(n_rows, rows),), (table.coefficients,), (n_rows, K, F, *table.scalars()), meta
