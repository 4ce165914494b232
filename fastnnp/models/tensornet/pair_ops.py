"""Message passing over unordered pairs with per-pair, per-channel weights, as autograd ops.

For pairs p = (first_p, second_p), weights ``w`` [P, G, F] (G weight groups, F channels) and
per-atom features ``T`` [N, C, F] whose component c uses weight group ``group[c]``:

    spread(w, T)[n, c]  = sum over pairs with n at one end of  w[p, group[c]] * T[other end, c]
    contract(g, T)[p, k] = sum over c in group k of  g[first_p, c] * T[second_p, c]
                                                    + g[second_p, c] * T[first_p, c]

``spread`` is symmetric in the pair's ends, so it is its own transpose: the gradients of
``spread`` are (``contract(grad, T)``, ``spread(w, grad)``) and those of ``contract`` are
(``spread(grad, T)``, ``spread(grad, g)``). Each op's backward calls the other op, so every
order of derivative works (forces, and force training), and no per-pair x component tensor of
the whole graph is ever stored: the work runs in small chunks of pairs that stay in cache.
"""

import torch
from torch import Tensor

CHUNK = 512


def _spread(weights: Tensor, features: Tensor, first: Tensor, second: Tensor, group: Tensor) -> Tensor:
    out = torch.zeros_like(features)
    for start in range(0, first.shape[0], CHUNK):
        i, j = first[start : start + CHUNK], second[start : start + CHUNK]
        w = weights[start : start + CHUNK].index_select(1, group)
        for target, source in ((i, j), (j, i)):
            out.index_add_(0, target, features.index_select(0, source).mul_(w))
    return out


def _contract(grad: Tensor, features: Tensor, first: Tensor, second: Tensor, group: Tensor, n_groups: int) -> Tensor:
    out = grad.new_zeros(first.shape[0], n_groups, grad.shape[-1])
    for start in range(0, first.shape[0], CHUNK):
        i, j = first[start : start + CHUNK], second[start : start + CHUNK]
        products = grad.index_select(0, i).mul_(features.index_select(0, j))
        products.add_(grad.index_select(0, j).mul_(features.index_select(0, i)))
        out[start : start + CHUNK].index_add_(1, group, products)
    return out


class Spread(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, features, first, second, group):
        ctx.save_for_backward(weights, features, first, second, group)
        return _spread(weights, features, first, second, group)

    @staticmethod
    def backward(ctx, grad):
        weights, features, first, second, group = ctx.saved_tensors
        grad_w = Contract.apply(grad, features, first, second, group, weights.shape[1]) if ctx.needs_input_grad[0] else None
        grad_t = Spread.apply(weights, grad, first, second, group) if ctx.needs_input_grad[1] else None
        return grad_w, grad_t, None, None, None


class Contract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, features, first, second, group, n_groups):
        ctx.save_for_backward(grad, features, first, second, group)
        return _contract(grad, features, first, second, group, n_groups)

    @staticmethod
    def backward(ctx, out_grad):
        grad, features, first, second, group = ctx.saved_tensors
        grad_g = Spread.apply(out_grad, features, first, second, group) if ctx.needs_input_grad[0] else None
        grad_t = Spread.apply(out_grad, grad, first, second, group) if ctx.needs_input_grad[1] else None
        return grad_g, grad_t, None, None, None, None


def spread(weights: Tensor, features: Tensor, first: Tensor, second: Tensor, group: Tensor) -> Tensor:
    """Per-atom sums [N, C, F] of neighbours' ``features`` [N, C, F] weighted by ``weights``
    [P, G, F] (component c uses group ``group[c]``) over the pairs (``first``, ``second``) [P]."""
    return Spread.apply(weights, features, first, second, group)


def contract(grad: Tensor, features: Tensor, first: Tensor, second: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Per-pair, per-group sums [P, G, F] of ``grad[one end] * features[other end]``."""
    return Contract.apply(grad, features, first, second, group, n_groups)
