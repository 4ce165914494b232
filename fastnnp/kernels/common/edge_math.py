"""Device functions shared by the edge kernels of every architecture, and their tile shape.

``@triton.jit`` helpers, inlined into the kernels that call them: the activations TorchMD-Net
checkpoints name, the two radial bases and the cosine cutoff with their derivatives
(elementwise on blocks of distances, in the checkpoint's length unit), and the loads and sums
of edge tiles over a :class:`~fastnnp.kernels.common.neighbor_search.NeighborTable`.
"""

import triton
import triton.language as tl

from .interpreter import interpreting

# Edge tiles are (receivers per program, slots per step). The CPU interpreter runs every
# operation of every program in numpy, so it gets larger tiles (fewer, larger operations).
GPU_TILE = (1, 16)
INTERPRETER_TILE = (32, 32)
# The edge kernels' float32 scalar arguments (radial basis alpha and the two cutoffs).
FLOAT_SCALARS = ("alpha", "lower", "upper")


def tile_shape(gpu_tile: tuple[int, int] = GPU_TILE) -> tuple[int, int]:
    """(ROWS, SLOTS) of the edge kernels' tiles on this platform: ``gpu_tile`` on the GPU
    (the MLP kernels' GPU_TILE unless a kernel family has its own)."""
    return INTERPRETER_TILE if interpreting() else gpu_tile


def gpu_tile_constexprs(channels: int, num_rbf: int) -> dict:
    """Tile and block constexprs of an edge kernel on the GPU, for the compile check."""
    rows, slots = GPU_TILE
    return dict(BR=max(16, triton.next_power_of_2(num_rbf)), BF=triton.next_power_of_2(channels), ROWS=rows, SLOTS=slots)


@triton.jit
def softplus(x):
    """log(1 + exp(x)), stable for large |x|."""
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def activation(x, ACT: tl.constexpr):
    """The activation with code ``ACT`` (:mod:`~fastnnp.kernels.common.codes`: SILU 0, SSP 1,
    TANH 2, SIGMOID 3)."""
    if ACT == 0:
        y = x * tl.sigmoid(x)
    elif ACT == 1:
        y = softplus(x) - 0.6931471824645996  # log 2 rounded to float32, as TorchMD-Net
    elif ACT == 2:
        y = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    else:
        y = tl.sigmoid(x)
    return y


@triton.jit
def activation_grad(x, ACT: tl.constexpr):
    """d activation(x) / dx."""
    if ACT == 0:
        s = tl.sigmoid(x)
        g = s * (1.0 + x * (1.0 - s))
    elif ACT == 1:
        g = tl.sigmoid(x)
    elif ACT == 2:
        t = 2.0 * tl.sigmoid(2.0 * x) - 1.0
        g = 1.0 - t * t
    else:
        s = tl.sigmoid(x)
        g = s * (1.0 - s)
    return g


@triton.jit
def cosine_cutoff(d, lower, upper, HAS_LOWER: tl.constexpr):
    """(value, derivative) of TorchMD-Net's cosine cutoff at distances ``d``."""
    if HAS_LOWER:
        width = upper - lower
        phase = 3.141592653589793 * (2.0 * (d - lower) / width + 1.0)
        inside = (d < upper) & (d > lower)
        value = tl.where(inside, 0.5 * (tl.cos(phase) + 1.0), 0.0)
        slope = tl.where(inside, -0.5 * tl.sin(phase) * (2.0 * 3.141592653589793 / width), 0.0)
    else:
        phase = d * (3.141592653589793 / upper)
        inside = d < upper
        value = tl.where(inside, 0.5 * (tl.cos(phase) + 1.0), 0.0)
        slope = tl.where(inside, -0.5 * tl.sin(phase) * (3.141592653589793 / upper), 0.0)
    return value, slope


@triton.jit
def radial_basis(d, p0, p1, lower, upper, alpha, RBF: tl.constexpr):
    """(values, derivatives) [BE, BR] of the radial basis at distances ``d`` [BE].

    expnorm: p0 = means, p1 = betas [BR]; gauss: p0 = offsets, p1 = coefficient (broadcast).
    """
    dd = d[:, None]
    if RBF == 0:
        envelope, envelope_slope = cosine_cutoff(dd, 0.0, upper, False)
        x = tl.exp(alpha * (lower - dd))
        shifted = x - p0[None, :]
        gauss = tl.exp(-p1[None, :] * shifted * shifted)
        value = envelope * gauss
        slope = envelope_slope * gauss + value * (2.0 * p1[None, :] * shifted * alpha * x)
    else:
        delta = dd - p0[None, :]
        value = tl.exp(p1[None, :] * delta * delta)
        slope = value * (2.0 * p1[None, :] * delta)
    return value, slope


@triton.jit
def program_rows(counts_ptr, n_rows, ROWS: tl.constexpr):
    """First receiver row of this program and the most slots any of its ROWS rows uses."""
    row0 = tl.program_id(0) * ROWS
    rows = row0 + tl.arange(0, ROWS)
    return row0, tl.max(tl.load(counts_ptr + rows, mask=rows < n_rows, other=0), axis=0)


@triton.jit
def edge_tile(vec_ptr, nbr_ptr, counts_ptr, row0, slot0, n_rows, K, ROWS: tl.constexpr, SLOTS: tl.constexpr):
    """Edges of rows row0.. and slots slot0..: (receiver, sender, valid, edge index, vector, length)."""
    t = tl.arange(0, ROWS * SLOTS)
    row = row0 + t // SLOTS
    slot = slot0 + t % SLOTS
    count = tl.load(counts_ptr + row, mask=row < n_rows, other=0)
    valid = slot < count
    edge = row.to(tl.int64) * K + slot
    sender = tl.load(nbr_ptr + edge, mask=valid, other=0).to(tl.int64)
    vx = tl.load(vec_ptr + 3 * edge, mask=valid, other=0.0)
    vy = tl.load(vec_ptr + 3 * edge + 1, mask=valid, other=0.0)
    vz = tl.load(vec_ptr + 3 * edge + 2, mask=valid, other=0.0)
    d = tl.sqrt(vx * vx + vy * vy + vz * vz)
    return row.to(tl.int64), sender, valid, edge, vx, vy, vz, d


@triton.jit
def row_sum(values, ROWS: tl.constexpr, SLOTS: tl.constexpr, BF: tl.constexpr):
    """[ROWS * SLOTS, BF] -> [ROWS, BF]: sum over each receiver's slots."""
    return tl.sum(tl.reshape(values, (ROWS, SLOTS, BF)), axis=1)


@triton.jit
def store_vector_gradient(grad_vec_ptr, edge, valid, vx, vy, vz, d, g_d):
    """d loss / d v = g_d v / d for a tile's edges (0 at d = 0 and in the padding)."""
    scale = tl.where(valid & (d > 0), g_d / tl.where(d > 0, d, 1.0), 0.0)
    tl.store(grad_vec_ptr + 3 * edge, scale * vx, mask=valid)
    tl.store(grad_vec_ptr + 3 * edge + 1, scale * vy, mask=valid)
    tl.store(grad_vec_ptr + 3 * edge + 2, scale * vz, mask=valid)
