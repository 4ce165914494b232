"""Warps, pipelining stages and hidden chunk of TensorNet's radial-MLP message kernels
(``_forward_kernel``, ``_backward_kernel`` of :mod:`~fastnnp.kernels.tensornet.embedding_messages`
and :mod:`~fastnnp.kernels.tensornet.interaction_messages`, the ``radial="exact"`` path).

Their tile stays :data:`~fastnnp.kernels.common.edge_math.GPU_TILE`, (1, 16): ``tl.dot`` needs
M = ROWS x SLOTS >= 16 rows, and (2, 8) or (4, 4) (the same 16 rows) were no better. With
``PRECISION="ieee"`` (exact float32) ``tl.dot`` is lowered to FMAs on a blocked layout, where
each thread holds the whole K extent of its rows of A and columns of B: the K = F products
(h1 W2^T; in the backward also g_z3 W3 and g_h1 W1) put about 2 x F operands per thread in
registers whatever the warps, besides the ~30 [16, F] tiles the message sums keep live. The
loads of weight tiles in the hidden-unit loop are software-pipelined ``num_stages`` deep, which
is where most of the shared memory goes (e.g. 215 KB at 3 stages, 68 KB at 1 for the F=128
interaction backward). Measured on sm_90 (ptxas; registers, spill stores in bytes, shared memory,
theoretical occupancy; 16 warps cap registers at 128, 32 warps at 64):

Embedding forward (no hidden layer):

* 4 warps (before): F=64 220 regs, no spills, 12.5 %; F=128 255, 28 B, 12.5 %;
* 8 warps: F=64 178, none, 12.5 %; F=128 220, none, 12.5 %;
* 16 warps: F=64 126, none, 27 KB, 25 %; F=128 128, none, 60 KB, 25 % -- used here;
* 16 warps with (2, 8) / (4, 4): F=128 292 / 32 B spills; 32 warps: F=64 24 B, F=128 780 B.

Interaction forward (F=64 / F=128):

* 4 warps, KC 32, 3 stages (before): 644 B / 2328 B spills, 12.5 % / 6.2 % (157 KB shared);
* 8 warps, KC 16: 3 stages 0 / 44 B; 2 stages F=128 210 regs, no spills, 58 KB, 12.5 % -- used at F=128;
* 8 warps, KC 32, 1 stage: F=64 254 regs, no spills; F=128 972 B;
* 16 warps, KC 16: F=64 92 regs (3 stages) / 88 (2 stages), no spills, 25 % -- used at F <= 64
  (2 stages, 30 KB); F=128 128 regs with 24 B spills at 1 or 2 stages, 44 B at 3;
* 16 warps, KC 32: F=64 20 B (3 stages) / 136 B (1), F=128 412 B / 708 B;
* (2, 8) / (4, 4), 16 warps, KC 16, 3 stages: F=64 16 B / none (102 regs, 25 %), F=128 308 / 204 B;
* 32 warps, KC 16: F=64 28 B, F=128 32 B (64 regs, 50 %);
* ``sched4reg`` made every case tried worse (F=128 16 warps KC 16: 24 -> 152 B).

No shape removed the spills of the backward kernels, so they keep 4 warps, KC 32, 3 stages
(interaction backward F=64 / F=128: 1156 / 3664 B, 12.5 % / 6.2 %; embedding backward 448 /
2288 B). The least spilling shapes found: interaction backward 8 warps KC 16 (F=64 40 B at 2 or
3 stages, 12.5 %), 16 warps KC 16 (F=64 48 B at 2 stages, F=128 432 B at 2 stages / 436 B at 3,
25 %), 32 warps KC 16 (F=128 392 B, 50 %); embedding backward 8 warps (F=64 24 B, F=128 640 B),
16 warps (F=64 208 B, F=128 456 B at 2 stages, 25 %), 32 warps (F=64 244 B, F=128 608 B). Those
trade fewer spills for replicated FMA-dot operands and have not been timed, so they are not used.

``bench/results/kernel_resources.md`` has the figures of the shapes used.
"""

from typing import Optional

# Hidden units of the interaction MLP's 2F-wide layer per step where not chosen below (the backward).
HIDDEN_CHUNK = 32


def embedding_launch(backward: bool) -> dict:
    """Launch options of an embedding projection kernel (any F): 16 warps for the forward, 4
    (Triton's default) for the backward; Triton's default num_stages."""
    return dict(num_warps=4 if backward else 16)


def interaction_launch(backward: bool, block_f: int) -> dict:
    """KC and launch options of an interaction MLP kernel for BF = ``block_f``: forward KC 16,
    2 stages, 16 warps up to BF 64 and 8 above; backward KC 32, 4 warps, Triton's default 3 stages
    (as before: no shape tried removed its spills). The interpreter ignores warps and stages."""
    if backward:
        return dict(KC=HIDDEN_CHUNK, num_warps=4)
    return dict(KC=16, num_warps=16 if block_f <= 64 else 8, num_stages=2)


def split_launch(launch: dict) -> tuple[dict, int, Optional[int]]:
    """(constexprs, num_warps, num_stages) of a launch dict, as a compile case takes them."""
    constexprs = {k: v for k, v in launch.items() if k not in ("num_warps", "num_stages")}
    return constexprs, launch["num_warps"], launch.get("num_stages")
