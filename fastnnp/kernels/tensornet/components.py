"""TensorNet's per-atom component layout and device functions for per-channel 3x3 tensors.

A rank-2 tensor X = I 1 + A + S is carried either as its nine entries (row-major tuples
x00, x01, ... x22) or, compactly, as ten components (I, the vector a with A = skew(a), and the
six entries xx yy zz xy xz yz of S), the layout of the per-atom [N, 10, F] arrays. Each entry
is a tile over (atoms, channels). ``*_t`` functions are the transposes (adjoints) used in
backward passes.
"""

import triton
import triton.language as tl


@triton.jit
def load_components(ptr, offsets, mask, F):
    """The ten components at ``ptr + offsets + c * F`` of a [N, 10, F] array."""
    c0 = tl.load(ptr + offsets, mask=mask, other=0.0)
    c1 = tl.load(ptr + offsets + F, mask=mask, other=0.0)
    c2 = tl.load(ptr + offsets + 2 * F, mask=mask, other=0.0)
    c3 = tl.load(ptr + offsets + 3 * F, mask=mask, other=0.0)
    c4 = tl.load(ptr + offsets + 4 * F, mask=mask, other=0.0)
    c5 = tl.load(ptr + offsets + 5 * F, mask=mask, other=0.0)
    c6 = tl.load(ptr + offsets + 6 * F, mask=mask, other=0.0)
    c7 = tl.load(ptr + offsets + 7 * F, mask=mask, other=0.0)
    c8 = tl.load(ptr + offsets + 8 * F, mask=mask, other=0.0)
    c9 = tl.load(ptr + offsets + 9 * F, mask=mask, other=0.0)
    return c0, c1, c2, c3, c4, c5, c6, c7, c8, c9


@triton.jit
def store_components(ptr, offsets, mask, F, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9):
    tl.store(ptr + offsets, c0, mask=mask)
    tl.store(ptr + offsets + F, c1, mask=mask)
    tl.store(ptr + offsets + 2 * F, c2, mask=mask)
    tl.store(ptr + offsets + 3 * F, c3, mask=mask)
    tl.store(ptr + offsets + 4 * F, c4, mask=mask)
    tl.store(ptr + offsets + 5 * F, c5, mask=mask)
    tl.store(ptr + offsets + 6 * F, c6, mask=mask)
    tl.store(ptr + offsets + 7 * F, c7, mask=mask)
    tl.store(ptr + offsets + 8 * F, c8, mask=mask)
    tl.store(ptr + offsets + 9 * F, c9, mask=mask)


@triton.jit
def load_matrix(ptr, offsets, mask, F):
    """The nine entries at ``ptr + offsets + (3 r + c) * F`` of a [N, 3, 3, F] array."""
    x00 = tl.load(ptr + offsets, mask=mask, other=0.0)
    x01 = tl.load(ptr + offsets + F, mask=mask, other=0.0)
    x02 = tl.load(ptr + offsets + 2 * F, mask=mask, other=0.0)
    x10 = tl.load(ptr + offsets + 3 * F, mask=mask, other=0.0)
    x11 = tl.load(ptr + offsets + 4 * F, mask=mask, other=0.0)
    x12 = tl.load(ptr + offsets + 5 * F, mask=mask, other=0.0)
    x20 = tl.load(ptr + offsets + 6 * F, mask=mask, other=0.0)
    x21 = tl.load(ptr + offsets + 7 * F, mask=mask, other=0.0)
    x22 = tl.load(ptr + offsets + 8 * F, mask=mask, other=0.0)
    return x00, x01, x02, x10, x11, x12, x20, x21, x22


@triton.jit
def store_matrix(ptr, offsets, mask, F, x00, x01, x02, x10, x11, x12, x20, x21, x22):
    tl.store(ptr + offsets, x00, mask=mask)
    tl.store(ptr + offsets + F, x01, mask=mask)
    tl.store(ptr + offsets + 2 * F, x02, mask=mask)
    tl.store(ptr + offsets + 3 * F, x10, mask=mask)
    tl.store(ptr + offsets + 4 * F, x11, mask=mask)
    tl.store(ptr + offsets + 5 * F, x12, mask=mask)
    tl.store(ptr + offsets + 6 * F, x20, mask=mask)
    tl.store(ptr + offsets + 7 * F, x21, mask=mask)
    tl.store(ptr + offsets + 8 * F, x22, mask=mask)


@triton.jit
def compose(i, ax, ay, az, sxx, syy, szz, sxy, sxz, syz):
    """Ten components -> nine entries of I 1 + skew(a) + S."""
    return (
        i + sxx, sxy - az, sxz + ay,
        sxy + az, i + syy, syz - ax,
        sxz - ay, syz + ax, i + szz,
    )


@triton.jit
def compose_t(g00, g01, g02, g10, g11, g12, g20, g21, g22):
    """Adjoint of :func:`compose`: a gradient on the nine entries -> on the ten components."""
    return (
        g00 + g11 + g22, g21 - g12, g02 - g20, g10 - g01,
        g00, g11, g22, g01 + g10, g02 + g20, g12 + g21,
    )


@triton.jit
def decompose(x00, x01, x02, x10, x11, x12, x20, x21, x22):
    """Nine entries -> ten components (I, a, six entries of the symmetric traceless S)."""
    i = (x00 + x11 + x22) / 3.0
    return (
        i, 0.5 * (x21 - x12), 0.5 * (x02 - x20), 0.5 * (x10 - x01),
        x00 - i, x11 - i, x22 - i, 0.5 * (x01 + x10), 0.5 * (x02 + x20), 0.5 * (x12 + x21),
    )


@triton.jit
def decompose_t(gi, gax, gay, gaz, gxx, gyy, gzz, gxy, gxz, gyz):
    """Adjoint of :func:`decompose`: a gradient on the ten components -> on the nine entries."""
    diagonal = (gi - gxx - gyy - gzz) / 3.0
    return (
        diagonal + gxx, 0.5 * (gxy - gaz), 0.5 * (gxz + gay),
        0.5 * (gxy + gaz), diagonal + gyy, 0.5 * (gyz - gax),
        0.5 * (gxz - gay), 0.5 * (gyz + gax), diagonal + gzz,
    )


@triton.jit
def matmul(a00, a01, a02, a10, a11, a12, a20, a21, a22, b00, b01, b02, b10, b11, b12, b20, b21, b22):
    """Entries of A @ B, channel by channel."""
    return (
        a00 * b00 + a01 * b10 + a02 * b20, a00 * b01 + a01 * b11 + a02 * b21, a00 * b02 + a01 * b12 + a02 * b22,
        a10 * b00 + a11 * b10 + a12 * b20, a10 * b01 + a11 * b11 + a12 * b21, a10 * b02 + a11 * b12 + a12 * b22,
        a20 * b00 + a21 * b10 + a22 * b20, a20 * b01 + a21 * b11 + a22 * b21, a20 * b02 + a21 * b12 + a22 * b22,
    )


@triton.jit
def squared_norm(x00, x01, x02, x10, x11, x12, x20, x21, x22):
    return (
        x00 * x00 + x01 * x01 + x02 * x02 + x10 * x10 + x11 * x11 + x12 * x12 + x20 * x20 + x21 * x21 + x22 * x22
    )


@triton.jit
def store_rows(ptr, acc, row0, c: tl.constexpr, n_rows, F, ROWS: tl.constexpr, BF: tl.constexpr):
    """Store ``acc`` [ROWS, BF] as component ``c`` of rows row0.. of a per-atom [N, 10, F] array."""
    rows = (row0 + tl.arange(0, ROWS)).to(tl.int64)
    f = tl.arange(0, BF)
    tl.store(ptr + rows[:, None] * (10 * F) + c * F + f[None, :], acc, mask=(rows[:, None] < n_rows) & (f[None, :] < F))


@triton.jit
def zero_rows(ROWS: tl.constexpr, BF: tl.constexpr):
    """Ten [ROWS, BF] float32 accumulators, one per component (I, A vector, S six)."""
    return (
        tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32),
        tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32),
        tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32), tl.zeros((ROWS, BF), tl.float32),
        tl.zeros((ROWS, BF), tl.float32),
    )


@triton.jit
def store_all_rows(ptr, row0, n_rows, F, ROWS: tl.constexpr, BF: tl.constexpr, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9):
    """Store the ten accumulators of :func:`zero_rows` into rows row0.. of a [N, 10, F] array."""
    store_rows(ptr, a0, row0, 0, n_rows, F, ROWS, BF)
    store_rows(ptr, a1, row0, 1, n_rows, F, ROWS, BF)
    store_rows(ptr, a2, row0, 2, n_rows, F, ROWS, BF)
    store_rows(ptr, a3, row0, 3, n_rows, F, ROWS, BF)
    store_rows(ptr, a4, row0, 4, n_rows, F, ROWS, BF)
    store_rows(ptr, a5, row0, 5, n_rows, F, ROWS, BF)
    store_rows(ptr, a6, row0, 6, n_rows, F, ROWS, BF)
    store_rows(ptr, a7, row0, 7, n_rows, F, ROWS, BF)
    store_rows(ptr, a8, row0, 8, n_rows, F, ROWS, BF)
    store_rows(ptr, a9, row0, 9, n_rows, F, ROWS, BF)
