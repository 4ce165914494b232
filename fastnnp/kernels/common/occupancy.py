"""Theoretical occupancy of a kernel on one streaming multiprocessor, as the CUDA occupancy
calculator computes it: the resident blocks are the fewest that registers, shared memory,
threads and the block limit each allow, and occupancy is their warps over the SM's maximum.
"""

import math
from typing import NamedTuple


class SmLimits(NamedTuple):
    """What one SM holds; the defaults are sm_90's (H100, H200)."""

    registers: int = 65536  # 32-bit registers per SM
    register_granularity: int = 256  # registers are allocated per warp in units of this (8 per thread)
    shared: int = 233472  # shared memory per SM, bytes (228 KiB)
    shared_per_block: int = 232448  # the most one block may use, bytes (227 KiB: the SM's less the reserve)
    reserved_shared: int = 1024  # bytes the system reserves in every block
    shared_granularity: int = 128  # shared memory is allocated in units of this, bytes
    threads: int = 2048
    warps: int = 64
    blocks: int = 32


SM90 = SmLimits()


class Occupancy(NamedTuple):
    """Resident blocks and active warps per SM, ``fraction`` = warps / the SM's maximum, and
    the limits (``registers``, ``shared memory``, ``threads``, ``blocks``) that set ``blocks``."""

    blocks: int
    warps: int
    fraction: float
    limited_by: tuple[str, ...]


def occupancy(registers: int, shared: int, num_warps: int, limits: SmLimits = SM90) -> Occupancy:
    """Occupancy of blocks of ``num_warps`` warps using ``registers`` per thread and ``shared``
    bytes of dynamic shared memory. A block that cannot fit at all gives 0 blocks."""
    registers_per_warp = math.ceil(32 * registers / limits.register_granularity) * limits.register_granularity
    shared_per_block = math.ceil((shared + limits.reserved_shared) / limits.shared_granularity) * limits.shared_granularity
    allowed = {
        "registers": limits.registers // registers_per_warp // num_warps,
        "shared memory": limits.shared // shared_per_block,
        "threads": limits.threads // (32 * num_warps),
        "blocks": limits.blocks,
    }
    blocks = min(allowed.values())
    warps = blocks * num_warps
    return Occupancy(blocks, warps, warps / limits.warps, tuple(k for k, v in allowed.items() if v == blocks))
