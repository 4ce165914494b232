"""Message passing over unordered pairs with per-pair, per-channel weights, as autograd ops.

For pairs p = (first_p, second_p), weights ``w`` [P, G, F] (G weight groups, F channels) and
per-atom features ``T`` [N, C, F] whose components come in G consecutive runs of ``sizes``
(component c uses weight group ``group[c]``, its run):

    spread(w, T)[n, c]  = sum over pairs with n at one end of  w[p, group[c]] * T[other end, c]
    contract(g, T)[p, k] = sum over c in group k of  g[first_p, c] * T[second_p, c]
                                                    + g[second_p, c] * T[first_p, c]

``spread`` is symmetric in the pair's ends, so it is its own transpose: the gradients of
``spread`` are (``contract(grad, T)``, ``spread(w, grad)``) and those of ``contract`` are
(``spread(grad, T)``, ``spread(grad, g)``). Each op's backward calls the other op, so every
order of derivative works (forces, and force training), and no per-pair x component tensor of
the whole graph is ever stored: the work runs in small chunks of pairs that stay in cache.
"""

import functools
import itertools

import torch
from torch import Tensor

CHUNK = 512


@functools.lru_cache(maxsize=16)
def _group_sums(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """[G, C]: 1 where component c is in group k's run of ``sizes`` components (the group sums
    of [.., C, F] products as one ``bmm``)."""
    group = torch.tensor([k for k, size in enumerate(sizes) for _ in range(size)])
    return (torch.arange(len(sizes))[:, None] == group[None]).to(dtype=dtype, device=device)


def _weigh_runs(gathered: Tensor, weights: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """``gathered`` [c, C, F] with each run of ``sizes`` components times its group's ``weights``
    [c, G, F], in place: no [c, C, F] copy of the weights."""
    for k, end in enumerate(itertools.accumulate(sizes)):
        gathered[:, end - sizes[k] : end].mul_(weights[:, k : k + 1])
    return gathered


def _spread(weights: Tensor, features: Tensor, first: Tensor, second: Tensor, sizes: tuple[int, ...]) -> Tensor:
    out = torch.zeros_like(features)
    for i, j, w in zip(first.split(CHUNK), second.split(CHUNK), weights.split(CHUNK)):
        for target, source in ((i, j), (j, i)):
            out.index_add_(0, target, _weigh_runs(features.index_select(0, source), w, sizes))
    return out


def _contract(grad: Tensor, features: Tensor, first: Tensor, second: Tensor, sizes: tuple[int, ...]) -> Tensor:
    sums = _group_sums(sizes, grad.dtype, grad.device)
    out = grad.new_empty(first.shape[0], len(sizes), grad.shape[-1])
    for start in range(0, first.shape[0], CHUNK):
        i, j = first[start : start + CHUNK], second[start : start + CHUNK]
        products = grad.index_select(0, i).mul_(features.index_select(0, j))
        products.add_(grad.index_select(0, j).mul_(features.index_select(0, i)))
        torch.bmm(sums.expand(products.shape[0], -1, -1), products, out=out[start : start + CHUNK])
    return out


def _spread_backward(
    weights: Tensor, features: Tensor, grad: Tensor, first: Tensor, second: Tensor, sizes: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """(``_contract(grad, features)``, ``_spread(weights, grad)``) in one pass over the pairs:
    each chunk's rows of ``grad`` are gathered once for both (four gathers a chunk, not six)."""
    sums = _group_sums(sizes, grad.dtype, grad.device)
    grad_w = grad.new_empty(first.shape[0], len(sizes), grad.shape[-1])
    grad_t = torch.zeros_like(features)
    for start in range(0, first.shape[0], CHUNK):
        i, j = first[start : start + CHUNK], second[start : start + CHUNK]
        w = weights[start : start + CHUNK]
        grad_i, grad_j = grad.index_select(0, i), grad.index_select(0, j)
        products = features.index_select(0, j).mul_(grad_i)
        products.addcmul_(features.index_select(0, i), grad_j)
        torch.bmm(sums.expand(products.shape[0], -1, -1), products, out=grad_w[start : start + CHUNK])
        for target, gathered in ((i, grad_j), (j, grad_i)):
            grad_t.index_add_(0, target, _weigh_runs(gathered, w, sizes))
    return grad_w, grad_t


class Spread(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, features, first, second, sizes):
        ctx.save_for_backward(weights, features, first, second)
        ctx.sizes = sizes
        return _spread(weights, features, first, second, sizes)

    @staticmethod
    def backward(ctx, grad):
        weights, features, first, second = ctx.saved_tensors
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and not torch.is_grad_enabled():
            # no graph of this backward is wanted (no double backward): one fused pass
            return *_spread_backward(weights, features, grad, first, second, ctx.sizes), None, None, None
        grad_w = Contract.apply(grad, features, first, second, ctx.sizes) if ctx.needs_input_grad[0] else None
        grad_t = Spread.apply(weights, grad, first, second, ctx.sizes) if ctx.needs_input_grad[1] else None
        return grad_w, grad_t, None, None, None


class Contract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, features, first, second, sizes):
        ctx.save_for_backward(grad, features, first, second)
        ctx.sizes = sizes
        return _contract(grad, features, first, second, sizes)

    @staticmethod
    def backward(ctx, out_grad):
        grad, features, first, second = ctx.saved_tensors
        grad_g = Spread.apply(out_grad, features, first, second, ctx.sizes) if ctx.needs_input_grad[0] else None
        grad_t = Spread.apply(out_grad, grad, first, second, ctx.sizes) if ctx.needs_input_grad[1] else None
        return grad_g, grad_t, None, None, None


def spread(weights: Tensor, features: Tensor, first: Tensor, second: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Per-atom sums [N, C, F] of neighbours' ``features`` [N, C, F] weighted by ``weights``
    [P, G, F] (the G runs of ``sizes`` components use one group each) over the pairs
    (``first``, ``second``) [P]."""
    return Spread.apply(weights, features, first, second, sizes)


def contract(grad: Tensor, features: Tensor, first: Tensor, second: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Per-pair, per-group sums [P, G, F] of ``grad[one end] * features[other end]`` over each
    group's run of ``sizes`` components."""
    return Contract.apply(grad, features, first, second, sizes)
