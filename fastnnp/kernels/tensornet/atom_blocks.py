"""Blocks of the per-atom elementwise kernels: (atoms x channels) tiles of [N, C, F] arrays.

Every per-atom kernel (:mod:`~fastnnp.kernels.tensornet.interaction_update`,
:mod:`~fastnnp.kernels.tensornet.atom_tensors`) runs one program per block of
``block_atoms()`` atoms and :data:`BLOCK_CHANNELS` channels; the interpreter gets larger
blocks (fewer numpy calls). :func:`check_float32` is their inputs' dtype check.
"""

import triton
import triton.language as tl
from torch import Tensor, float32

from ..common.interpreter import interpreting

GPU_BLOCK_ATOMS = 4
INTERPRETER_BLOCK_ATOMS = 64
BLOCK_CHANNELS = 32


def check_float32(op: str, *tensors: Tensor) -> None:
    """Refuse arguments of ``op`` that are not float32 (what the per-atom kernels compute in)."""
    for t in tensors:
        if t.dtype != float32:
            raise ValueError(f"{op} runs float32 only, got {t.dtype}")


def block_atoms() -> int:
    return INTERPRETER_BLOCK_ATOMS if interpreting() else GPU_BLOCK_ATOMS


def atom_launch(n_atoms: int, F: int) -> tuple[tuple[int, int], dict]:
    """Grid and block sizes (``BN``, ``BF``) of a per-atom kernel."""
    atoms = block_atoms()
    return (triton.cdiv(n_atoms, atoms), triton.cdiv(F, BLOCK_CHANNELS)), {"BN": atoms, "BF": BLOCK_CHANNELS}


def gpu_blocks() -> dict:
    """The block sizes the GPU launches (for compile cases)."""
    return dict(BN=GPU_BLOCK_ATOMS, BF=BLOCK_CHANNELS)


@triton.jit
def atom_block(n_atoms, F, stride, BN: tl.constexpr, BF: tl.constexpr):
    """(atoms, channels, offsets into an array with ``stride`` floats per atom, mask) of this program's block."""
    atoms = (tl.program_id(0) * BN + tl.arange(0, BN)).to(tl.int64)
    channels = tl.program_id(1) * BF + tl.arange(0, BF)
    mask = (atoms[:, None] < n_atoms) & (channels[None, :] < F)
    return atoms, channels, atoms[:, None] * stride + channels[None, :], mask
