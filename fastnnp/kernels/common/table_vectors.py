"""Edge vectors of a neighbour table as one registered op (``fastnnp::table_vectors``).

``vec[i, k] = pos[i] - pos[j] - images[i, k] @ box[s_i]`` for the k-th sender j of receiver i
(k < counts[i]), 0 in the padding slots: :func:`fastnnp.neighbors.table.table_vectors` (the
reference, in torch) as one kernel over (blocks of receivers × blocks of slots). Backward
(``fastnnp::table_vectors_backward``): ``grad_pos[i] += Σ_k g[i, k]`` (one atomic add per
receiver and block of slots) and ``grad_pos[j] -= g[i, k]`` (fp32 atomic adds). The cell's
derivative, wanted only for the stress, is the torch sum ``-Σ_{i in s, k} images[i, k]ᵀ g[i, k]``.

Work per edge slot: 12 bytes of vector written, 4 (neighbour) + 12 (images, periodic) read, a
12-byte gather of the sender's position (in cache for bin-sorted atoms); backward reads the
12-byte gradient and makes 3 atomic adds: memory-bound, ~40 bytes per slot each way.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...neighbors.table import NeighborTable
from .compile_case import CompileCase
from .interpreter import interpreting

GPU_BLOCK_ATOMS = 16
INTERPRETER_BLOCK_ATOMS = 128
MAX_BLOCK_SLOTS = 32


@triton.jit
def _slot_block(counts_ptr, n_atoms, K, BN: tl.constexpr, BK: tl.constexpr):
    """(receivers [BN], flat edge indices [BN, BK], listed-slot mask, in-table mask) of this program."""
    atoms = (tl.program_id(0) * BN + tl.arange(0, BN)).to(tl.int64)
    slots = tl.program_id(1) * BK + tl.arange(0, BK)
    live = atoms < n_atoms
    count = tl.load(counts_ptr + atoms, mask=live, other=0)
    in_table = live[:, None] & (slots[None, :] < K)
    listed = in_table & (slots[None, :] < count[:, None])
    return atoms, atoms[:, None] * K + slots[None, :], listed, in_table


@triton.jit
def _vectors_forward(pos_ptr, nbr_ptr, img_ptr, counts_ptr, sys_ptr, box_ptr, out_ptr, n_atoms, K,
                     PERIODIC: tl.constexpr, SHARED: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    atoms, edge, listed, in_table = _slot_block(counts_ptr, n_atoms, K, BN, BK)
    live = atoms < n_atoms
    j = tl.load(nbr_ptr + edge, mask=listed, other=0).to(tl.int64)
    if PERIODIC:
        n0 = tl.load(img_ptr + edge * 3, mask=listed, other=0).to(tl.float32)
        n1 = tl.load(img_ptr + edge * 3 + 1, mask=listed, other=0).to(tl.float32)
        n2 = tl.load(img_ptr + edge * 3 + 2, mask=listed, other=0).to(tl.float32)
        if SHARED:
            cell = tl.zeros_like(atoms)
        else:
            cell = tl.load(sys_ptr + atoms, mask=live, other=0)
    for c in tl.static_range(3):
        d = tl.load(pos_ptr + atoms * 3 + c, mask=live, other=0.0)[:, None] - tl.load(pos_ptr + j * 3 + c, mask=listed, other=0.0)
        if PERIODIC:
            b0 = tl.load(box_ptr + cell * 9 + c, mask=live, other=0.0)[:, None]
            b1 = tl.load(box_ptr + cell * 9 + 3 + c, mask=live, other=0.0)[:, None]
            b2 = tl.load(box_ptr + cell * 9 + 6 + c, mask=live, other=0.0)[:, None]
            d = d - (n0 * b0 + n1 * b1 + n2 * b2)
        tl.store(out_ptr + edge * 3 + c, tl.where(listed, d, 0.0), mask=in_table)


@triton.jit
def _vectors_backward(grad_ptr, nbr_ptr, counts_ptr, grad_pos_ptr, n_atoms, K, BN: tl.constexpr, BK: tl.constexpr):
    atoms, edge, listed, _ = _slot_block(counts_ptr, n_atoms, K, BN, BK)
    j = tl.load(nbr_ptr + edge, mask=listed, other=0).to(tl.int64)
    for c in tl.static_range(3):
        g = tl.load(grad_ptr + edge * 3 + c, mask=listed, other=0.0)
        tl.atomic_add(grad_pos_ptr + atoms * 3 + c, tl.sum(g, 1), mask=atoms < n_atoms)
        tl.atomic_add(grad_pos_ptr + j * 3 + c, -g, mask=listed)


def _launch(n_atoms: int, K: int) -> tuple[tuple[int, int], dict]:
    atoms = INTERPRETER_BLOCK_ATOMS if interpreting() else GPU_BLOCK_ATOMS
    slots = min(MAX_BLOCK_SLOTS, triton.next_power_of_2(max(K, 1)))
    return (triton.cdiv(n_atoms, atoms), triton.cdiv(K, slots)), {"BN": atoms, "BK": slots}


@torch.library.custom_op("fastnnp::table_vectors", mutates_args=())
def _vectors_op(
    pos: Tensor, neighbors: Tensor, images: Tensor, counts: Tensor, batch: Tensor, box: Optional[Tensor]
) -> Tensor:
    n_atoms, K = neighbors.shape
    out = pos.new_empty(n_atoms, K, 3)
    if n_atoms and K:
        grid, blocks = _launch(n_atoms, K)
        periodic = box is not None
        cells = box if periodic else pos  # unread without a box
        _vectors_forward[grid](
            pos, neighbors, images, counts, batch, cells, out, n_atoms, K,
            PERIODIC=periodic, SHARED=periodic and box.shape[0] == 1, **blocks,
        )
    return out


@_vectors_op.register_fake
def _(pos, neighbors, images, counts, batch, box):
    return pos.new_empty(neighbors.shape[0], neighbors.shape[1], 3)


@torch.library.custom_op("fastnnp::table_vectors_backward", mutates_args=())
def _vectors_backward_op(grad: Tensor, neighbors: Tensor, counts: Tensor) -> Tensor:
    n_atoms, K = neighbors.shape
    grad_pos = grad.new_zeros(n_atoms, 3)
    if n_atoms and K:
        grid, blocks = _launch(n_atoms, K)
        _vectors_backward[grid](grad.contiguous(), neighbors, counts, grad_pos, n_atoms, K, **blocks)
    return grad_pos


@_vectors_backward_op.register_fake
def _(grad, neighbors, counts):
    return grad.new_empty(neighbors.shape[0], 3)


def _setup(ctx, inputs, output):
    _, neighbors, images, counts, batch, box = inputs
    ctx.save_for_backward(neighbors, images, counts, batch)
    ctx.cells = 0 if box is None else box.shape[0]


def _grad(ctx, grad):
    neighbors, images, counts, batch = ctx.saved_tensors
    grad_pos = _vectors_backward_op(grad, neighbors, counts) if ctx.needs_input_grad[0] else None
    grad_box = None
    if ctx.needs_input_grad[5]:
        listed = torch.arange(neighbors.shape[1], device=counts.device) < counts[:, None]
        per_atom = -torch.einsum("nki,nkj->nij", images.to(grad.dtype) * listed[..., None], grad)
        grad_box = per_atom.sum(0, keepdim=True) if ctx.cells == 1 else per_atom.new_zeros(
            ctx.cells, 3, 3).index_add_(0, batch, per_atom)
    return grad_pos, None, None, None, None, grad_box


_vectors_op.register_autograd(_grad, setup_context=_setup)


def table_vectors(table: NeighborTable, pos: Tensor, batch: Tensor, box: Optional[Tensor]) -> Tensor:
    """Edge vectors [N, K, 3] of ``table`` for ``pos`` [N, 3] float32, ``batch`` [N] int64 and
    ``box`` None, [3, 3], [1, 3, 3] or [S, 3, 3]: the reference
    :func:`fastnnp.neighbors.table.table_vectors` fused, differentiable in ``pos`` and ``box``."""
    if pos.dtype != torch.float32:
        raise ValueError(f"table_vectors runs float32 only, got {pos.dtype}")
    cells = None if box is None else box.to(pos.dtype).reshape(-1, 3, 3).contiguous()
    return _vectors_op(pos.contiguous(), table.neighbors, table.images, table.counts, batch, cells)


def compile_cases(channels: int, num_rbf: int) -> list[CompileCase]:
    """Forward (periodic, one cell per system) and backward at the GPU block."""
    block = dict(BN=GPU_BLOCK_ATOMS, BK=MAX_BLOCK_SLOTS)
    ints = {"nbr_ptr": "*i32", "img_ptr": "*i32", "counts_ptr": "*i32", "sys_ptr": "*i64"}
    return [
        CompileCase(_vectors_forward, dict(PERIODIC=True, SHARED=False, **block), ints),
        CompileCase(_vectors_backward, block, {"nbr_ptr": "*i32", "counts_ptr": "*i32"}),
    ]
