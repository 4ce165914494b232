"""Each Triton kernel beside its torch reference on the same periodic water boxes.

    pytest bench/test_kernels.py --benchmark-only --benchmark-group-by=group

Groups are "<kernel> <mode> <system>", each with a "triton" and a "torch" row. Modes are
"forward" (no autograd graph) and "forward+backward" (gradients for the kernel's
differentiable inputs; the neighbour search has forward only). "torch" is the pure-torch
model's code for the same step, i.e. what ``backend="torch"`` runs:

* ``neighbor_search``: ``neighbor_table`` + ``table_vectors`` vs ``neighbor_list``.
* ``embedding_messages`` / ``interaction_messages``: the kernel on the neighbour table vs the
  model's chunked half-list message sums (``sum_pair_messages`` / ``spread``). Both start
  from the positions (the leaf in forward+backward) and build their edge vectors in the call.
* ``message_products`` / ``residual_update`` / ``channel_mix`` / ``normalized`` /
  ``embedding_components`` / ``readout_invariants``: vs the model's tensor arithmetic.

Before the first timing of a kernel on a system, the float32 kernel is checked against its
torch reference (:mod:`fastnnp.kernels.tensornet.reference`) in float64 with the tests'
tolerances (forward and gradients), on at most ``CHECK_ROWS`` receivers (all of a small
system; else the first and last few and a seeded random sample), so the check costs the same
at every size. Gradients for edge vectors are compared as 3-vectors (the tolerances applied to
the length of the error and of the reference vector): a near-zero Cartesian component of a
long gradient vector is an artefact of the frame, and at F=128 its float32 rounding can exceed
the componentwise tolerance. A wrong kernel fails both rows of its groups. On CUDA every timed
call ends with a synchronisation.

TensorNet: F=128, 32 expnorm rbf, cutoff 5 Å, SiLU, O(3), random weights (seeded).
"""

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import pytest
import torch
from torch import Tensor

from fastnnp.kernels.tensornet import reference as kernel_reference
from fastnnp.kernels.tensornet.atom_tensors import embedding_components, normalized, readout_invariants
from fastnnp.kernels.tensornet.channel_mix import channel_mix, mix_weights
from fastnnp.kernels.tensornet.embedding_messages import embedding_messages
from fastnnp.kernels.tensornet.interaction_messages import interaction_messages
from fastnnp.kernels.tensornet.interaction_update import message_products, residual_update
from fastnnp.kernels.common.neighbor_search import NeighborTable, neighbor_table, table_vectors
from fastnnp.models.tensornet.pair_messages import (
    HalfList,
    add_checkpointed_segments,
    half_list,
    recompute_segment,
    sum_pair_messages,
)
from fastnnp.models.tensornet.reference import CACHE_CHUNK, TensorNet
from fastnnp.models.tensornet.triton import embedding_filter, interaction_filter
from fastnnp.neighbors import NeighborList, neighbor_list

if TYPE_CHECKING:
    from conftest import System

HIDDEN = 128
MODES = ["forward", "forward+backward"]
IMPLS = ["triton", "torch"]
# float32 kernels vs float64 arithmetic on the same float32 inputs (as in tests/).
TOL = dict(rtol=1e-4, atol=1e-5)
# Receivers / atoms covered by the float64 check.
CHECK_ROWS = 1000
# Pairs that only one of two float32 searches finds must lie this close (Å) to the cutoff:
# rounding of coordinates up to ~100 Å moves a length by ~1e-5 Å.
CUTOFF_BAND = 1e-4

_checked: set[str] = set()


class Case(NamedTuple):
    """A kernel and the model's torch code for the same step, on the same float32 ``inputs``
    (``reference`` takes the model first); ``leaves`` are differentiated in forward+backward;
    ``check(model64)`` compares the kernel with the float64 reference arithmetic."""

    kernel: Callable[..., Tensor]
    reference: Callable[..., Tensor]
    inputs: dict[str, Tensor]
    leaves: tuple[str, ...]
    check: Callable[[TensorNet], None]


@pytest.fixture(scope="session")
def model(device, cutoff) -> TensorNet:
    torch.manual_seed(0)
    net = TensorNet(
        hidden_channels=HIDDEN, num_layers=1, num_rbf=32, rbf_type="expnorm", activation="silu",
        cutoff_upper=cutoff, max_z=10,
    )
    return net.to(device).requires_grad_(False)


@pytest.fixture(scope="session")
def model64(model) -> TensorNet:
    return copy.deepcopy(model).double()


def _check_rows(n: int, device: torch.device) -> Tensor:
    """Sorted rows the float64 check covers: all of them, or the first and last 8 and a
    seeded random sample of the others, ``CHECK_ROWS`` in all."""
    if n <= CHECK_ROWS:
        return torch.arange(n, device=device)
    sample = 8 + torch.randperm(n - 16, generator=torch.Generator().manual_seed(0))[: CHECK_ROWS - 16]
    return torch.cat([torch.arange(8), sample, torch.arange(n - 8, n)]).sort().values.to(device)


def _upstream(like: Tensor, rows: Tensor) -> Tensor:
    """A random incoming gradient, zero outside ``rows``."""
    grad = torch.zeros_like(like)
    grad[rows] = torch.randn_like(like[rows])
    return grad


def _assert_vectors_close(got: Tensor, expected: Tensor) -> None:
    """[..., 3] gradient vectors: ``TOL`` on the length of the error and of the reference."""
    bound = TOL["atol"] + TOL["rtol"] * expected.norm(dim=-1)
    worst = float(((got.double() - expected).norm(dim=-1) / bound).max())
    assert worst <= 1, f"edge-vector gradients: error {worst:.3g} x the tolerance"


def _pairs(system: "System", pos: Tensor, box: Tensor) -> HalfList:
    """The model's half list with edge vectors recomputed (differentiably) from ``pos``."""
    i, j = system.graph.edge_index
    vec = pos[i] - pos[j] - system.graph.image.to(pos.dtype) @ box
    return half_list(NeighborList(system.graph.edge_index, vec, vec.norm(dim=-1), system.graph.image))


def _embedding_case(system: "System", model: TensorNet) -> Case:
    table, F = system.table, HIDDEN
    embedding = model.tensor_embedding
    z_recv, z_send = embedding.atom_terms(system.z)
    projection = embedding_filter(embedding, model.distance_expansion)

    def kernel(pos, box, z_recv, z_send):
        vec = table_vectors(table, pos, system.batch, box)
        return embedding_messages(vec, z_recv, z_send, table.neighbors, table.counts, projection)

    def reference(net, pos, box, z_recv, z_send):
        """TensorEmbedding.forward's message sums, without the self loop."""
        pairs = _pairs(system, pos, box)
        n = pos.shape[0]

        def messages(*args):
            return net.tensor_embedding.pair_messages(net.distance_expansion, *args)

        initial = (z_recv.new_zeros(n, F), z_recv.new_zeros(n, 3, F), z_recv.new_zeros(n, 6, F))
        scalar, vector, outer = sum_pair_messages(
            messages, pairs, (pairs.vec, pairs.distance), (z_recv, z_send), initial, chunk_size=CACHE_CHUNK,
            segment_size=recompute_segment(pairs.first.shape[0], 16 * F),
        )
        return torch.cat((scalar[:, None], vector, outer), 1)

    inputs = dict(pos=system.pos, box=system.box, z_recv=z_recv, z_send=z_send)

    def check(net64: TensorNet) -> None:
        rows = _check_rows(system.pos.shape[0], system.pos.device)
        vec = table_vectors(table, system.pos, system.batch, system.box)
        vec32, vec64 = vec.clone().requires_grad_(), vec.double().requires_grad_()
        out = embedding_messages(vec32, z_recv, z_send, table.neighbors, table.counts, projection)
        edges = kernel_reference.table_edges(table.neighbors, table.counts, rows)
        ref = kernel_reference.embedding_messages(
            net64.tensor_embedding, net64.distance_expansion, vec64, z_recv.double(), z_send.double(), edges
        )
        torch.testing.assert_close(out[rows].double(), ref[rows], **TOL)
        grad = _upstream(ref, rows)
        (g_vec,), (r_vec,) = torch.autograd.grad(out, vec32, grad.float()), torch.autograd.grad(ref, vec64, grad)
        _assert_vectors_close(g_vec, r_vec)
        with torch.no_grad():  # the timed torch code computes the same sums
            timed = reference(net64, **{k: v.double() for k, v in inputs.items()})
        torch.testing.assert_close(timed[rows], ref.detach()[rows], **TOL)

    return Case(kernel, reference, inputs, ("pos",), check)


def _interaction_case(system: "System", model: TensorNet) -> Case:
    table, F = system.table, HIDDEN
    mlp = interaction_filter(model.layers[0], model.distance_expansion)

    def kernel(pos, box, features):
        vec = table_vectors(table, pos, system.batch, box)
        return interaction_messages(vec, features, table.neighbors, table.counts, mlp)

    def reference(net, pos, box, features):
        """Interaction.forward's filtered messages (self loop excluded)."""
        layer, pairs = net.layers[0], _pairs(system, pos, box)

        def messages(first, second, distance, features):
            return layer.filtered_messages(net.distance_expansion, first, second, distance, features)

        segment = recompute_segment(pairs.first.shape[0], 12 * F)
        if segment is None:
            return messages(pairs.first, pairs.second, pairs.distance, features)[0]
        return add_checkpointed_segments(
            messages, pairs, (pairs.distance,), (features,), (torch.zeros_like(features),), segment
        )[0]

    features = torch.randn(system.pos.shape[0], 10, F, device=system.pos.device)
    inputs = dict(pos=system.pos, box=system.box, features=features)

    def check(net64: TensorNet) -> None:
        rows = _check_rows(system.pos.shape[0], system.pos.device)
        vec = table_vectors(table, system.pos, system.batch, system.box)
        vec32, vec64 = vec.clone().requires_grad_(), vec.double().requires_grad_()
        feat32, feat64 = features.clone().requires_grad_(), features.double().requires_grad_()
        out = interaction_messages(vec32, feat32, table.neighbors, table.counts, mlp)
        edges = kernel_reference.table_edges(table.neighbors, table.counts, rows)
        ref = kernel_reference.interaction_messages(net64.layers[0], net64.distance_expansion, vec64, feat64, edges)
        torch.testing.assert_close(out[rows].double(), ref[rows], **TOL)
        grad = _upstream(ref, rows)
        g_vec, g_feat = torch.autograd.grad(out, (vec32, feat32), grad.float())
        r_vec, r_feat = torch.autograd.grad(ref, (vec64, feat64), grad)
        _assert_vectors_close(g_vec, r_vec)
        torch.testing.assert_close(g_feat.double(), r_feat, **TOL)
        with torch.no_grad():  # the timed torch code computes the same sums
            timed = reference(net64, **{k: v.double() for k, v in inputs.items()})
        torch.testing.assert_close(timed[rows], ref.detach()[rows], **TOL)

    return Case(kernel, reference, inputs, ("pos", "features"), check)


def _per_atom_check(kernel: Callable[..., Tensor], reference: Callable[..., Tensor], inputs: dict[str, Tensor],
                    leaves: tuple[str, ...], per_atom: tuple[str, ...]) -> Callable[[TensorNet], None]:
    """Check of a per-atom kernel: float32 on every atom, float64 reference on the check rows."""

    def check(net64: TensorNet) -> None:
        rows = _check_rows(inputs[leaves[0]].shape[0], inputs[leaves[0]].device)
        x32 = {k: v.clone().requires_grad_(k in leaves) for k, v in inputs.items()}
        x64 = {k: (v[rows] if k in per_atom else v).double().requires_grad_(k in leaves) for k, v in inputs.items()}
        out = kernel(**x32)
        ref = reference(net64, **x64)
        torch.testing.assert_close(out[rows].double(), ref, **TOL)
        grad = torch.randn_like(ref)
        full = torch.zeros_like(out)
        full[rows] = grad.float()
        got = torch.autograd.grad(out, [x32[k] for k in leaves], full)
        expected = torch.autograd.grad(ref, [x64[k] for k in leaves], grad)
        for name, g, e in zip(leaves, got, expected, strict=True):
            torch.testing.assert_close(g[rows].double(), e, **TOL, msg=lambda m, name=name: f"gradient for {name}: {m}")

    return check


def _products_case(system: "System", model: TensorNet) -> Case:
    n, device = system.pos.shape[0], system.pos.device
    self_loop = model.layers[0].distance_filter(model.distance_expansion, system.pos.new_zeros(1))[0]
    inputs = dict(
        messages=torch.randn(n, 10, HIDDEN, device=device), features=torch.randn(n, 10, HIDDEN, device=device),
        self_loop=self_loop, charge=1 + 0.1 * torch.randn(n, device=device),
    )

    def kernel(messages, features, self_loop, charge):
        return message_products(messages, features, self_loop, charge, "O(3)")

    def reference(net, messages, features, self_loop, charge):
        """Interaction.products (up to the channel-mixing linears), as components."""
        return kernel_reference.message_products(messages, features, self_loop, charge, "O(3)")

    leaves = ("messages", "features")
    check = _per_atom_check(kernel, reference, inputs, leaves, ("messages", "features", "charge"))
    return Case(kernel, reference, inputs, leaves, check)


def _residual_case(system: "System", model: TensorNet) -> Case:
    n, device = system.pos.shape[0], system.pos.device
    inputs = dict(
        X=torch.randn(n, 10, HIDDEN, device=device), components=torch.randn(n, 10, HIDDEN, device=device),
        charge=1 + 0.1 * torch.randn(n, device=device),
    )

    def kernel(X, components, charge):
        return residual_update(X, components, charge)

    def reference(net, X, components, charge):
        """Interaction.residual: X + dX + c dX dX, as components."""
        return kernel_reference.residual_update(X, components, charge)

    leaves = ("X", "components")
    check = _per_atom_check(kernel, reference, inputs, leaves, ("X", "components", "charge"))
    return Case(kernel, reference, inputs, leaves, check)


def _one_input_case(kernel: Callable[[Tensor], Tensor], reference: Callable[..., Tensor]) -> Callable[..., Case]:
    """A per-atom kernel of one [N, 10, F] component array ``x``."""

    def case(system: "System", model: TensorNet) -> Case:
        inputs = dict(x=torch.randn(system.pos.shape[0], 10, HIDDEN, device=system.pos.device))
        return Case(kernel, reference, inputs, ("x",), _per_atom_check(kernel, reference, inputs, ("x",), ("x",)))

    return case


def _channel_mix_case(system: "System", model: TensorNet) -> Case:
    weights = mix_weights(model.layers[0].linears_tensor[:3])

    def kernel(x):
        return channel_mix(x, weights)

    def reference(net, x):
        """The input's three linears (Interaction.mix), on components."""
        return kernel_reference.channel_mix(x, net.layers[0].linears_tensor[:3])

    return _one_input_case(kernel, reference)(system, model)


def _embedding_components_case(system: "System", model: TensorNet) -> Case:
    n, device = system.pos.shape[0], system.pos.device
    self_loop = model.tensor_embedding.distance_filter(model.distance_expansion, system.pos.new_zeros(1))[0, 0]
    inputs = dict(messages=torch.randn(n, 10, HIDDEN, device=device), terms=torch.randn(n, HIDDEN, device=device),
                  self_loop=self_loop)

    def kernel(messages, terms, self_loop):
        return embedding_components(messages, terms, self_loop)[0]

    def reference(net, messages, terms, self_loop):
        """TensorEmbedding.to_tensor's first tensor, as components."""
        return kernel_reference.embedding_components(messages, terms, self_loop)[0]

    check = _per_atom_check(kernel, reference, inputs, ("messages",), ("messages", "terms"))
    return Case(kernel, reference, inputs, ("messages",), check)


CASES = {
    "embedding_messages": _embedding_case,
    "interaction_messages": _interaction_case,
    "message_products": _products_case,
    "residual_update": _residual_case,
    "channel_mix": _channel_mix_case,
    "normalized": _one_input_case(normalized, lambda net, x: kernel_reference.normalized(x)),
    "embedding_components": _embedding_components_case,
    "readout_invariants": _one_input_case(readout_invariants, lambda net, x: kernel_reference.readout_invariants(x)),
}


def _timed(benchmark, group: str, fn: Callable[[], object], **info) -> None:
    """Benchmark ``fn`` in ``group``. On CUDA: one warm-up call (compilation, allocator), then
    pytest-benchmark's rounds, each call ending with a synchronisation. Off CUDA (the
    interpreter, tiny sizes) one round: a smoke test, not a measurement."""
    benchmark.group = group
    benchmark.extra_info.update(info)
    if not torch.cuda.is_available():
        benchmark.pedantic(fn, rounds=1, iterations=1)
        return

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    call()
    benchmark(call)


def _check_once(key: str, check: Callable[[], None], triton_missing: str | None) -> None:
    """Run ``check`` the first time ``key`` is met (when the kernels can run)."""
    if triton_missing or key in _checked:
        return
    check()
    _checked.add(key)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", list(CASES))
def test_kernel(benchmark, system, model, model64, triton_missing, kernel, mode, impl):
    if impl == "triton" and triton_missing:
        pytest.skip(triton_missing)
    case = CASES[kernel](system, model)
    _check_once(f"{kernel} {system.name}", lambda: case.check(model64), triton_missing)
    fn = case.kernel if impl == "triton" else lambda **x: case.reference(model, **x)
    if mode == "forward":

        def call():
            with torch.no_grad():
                return fn(**case.inputs)

    else:
        leaves = {k: v.detach().clone().requires_grad_(k in case.leaves) for k, v in case.inputs.items()}
        with torch.no_grad():
            grad = torch.randn_like(case.reference(model, **case.inputs))

        def call():
            return torch.autograd.grad(fn(**leaves), [leaves[k] for k in case.leaves], grad)

    _timed(benchmark, f"{kernel} {mode} {system.name}", call, atoms=system.pos.shape[0], impl=impl)


def _pair_keys(i: Tensor, j: Tensor, image: Tensor, n: int) -> Tensor:
    """One int64 per (receiver, sender, image) triple (images within +-31 cells)."""
    assert int(image.abs().max()) < 32
    code = image.long() + 32
    return (((i.long() * n + j.long()) * 64 + code[:, 0]) * 64 + code[:, 1]) * 64 + code[:, 2]


def _check_search(system: "System", table: NeighborTable) -> None:
    """``table`` (from the Triton search) holds the pure-torch list's (i, j, image) triples, up
    to pairs within rounding of the cutoff, with the same vectors; padding slots are
    (i, image 0, vector 0)."""
    pos, box, graph = system.pos, system.box, system.graph
    n = pos.shape[0]
    vec = table_vectors(table, pos, system.batch, box)
    valid = torch.arange(table.neighbors.shape[1], device=pos.device) < table.counts[:, None].long()
    rows = torch.arange(n, device=pos.device)[:, None].expand_as(table.neighbors)
    assert torch.equal(table.neighbors[~valid].long(), rows[~valid])
    assert not table.images[~valid].any() and not vec[~valid].any()
    receiver, slot = valid.nonzero(as_tuple=True)
    sender, image = table.neighbors[receiver, slot].long(), table.images[receiver, slot].long()
    got = _pair_keys(receiver, sender, image, n)
    want = _pair_keys(graph.edge_index[0], graph.edge_index[1], graph.image, n)
    assert torch.unique(got).numel() == got.numel(), "duplicate pairs in the table"
    for keys, others, i, j, img in (
        (got, want, receiver, sender, image), (want, got, graph.edge_index[0], graph.edge_index[1], graph.image)
    ):
        alone = ~torch.isin(keys, others)
        if alone.any():
            d = (pos.double()[i[alone]] - pos.double()[j[alone]] - img[alone].double() @ box.double()).norm(dim=-1)
            far = float((d - system.cutoff).abs().max())
            assert far < CUTOFF_BAND, f"{int(alone.sum())} pairs found by one search only, {far:.3g} Å from the cutoff"
    got_common, want_common = torch.isin(got, want), torch.isin(want, got)
    torch.testing.assert_close(
        vec[receiver, slot][got_common][torch.argsort(got[got_common])],
        graph.edge_vec[want_common][torch.argsort(want[want_common])],
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_neighbor_search(benchmark, system, triton_missing, impl):
    if impl == "triton" and triton_missing:
        pytest.skip(triton_missing)
    pos, batch, box, cutoff = system.pos, system.batch, system.box, system.cutoff

    def search(capacity: int | None = None) -> NeighborTable:
        return neighbor_table(pos, batch, cutoff, box=box, capacity=capacity)

    key = f"neighbor_search {system.name}"
    table = search() if impl == "triton" or not (triton_missing or key in _checked) else None
    _check_once(key, lambda: _check_search(system, table), triton_missing)
    if impl == "triton":
        capacity = table.neighbors.shape[1]  # the model passes the last width back

        def call():
            found = search(capacity)
            return found, table_vectors(found, pos, batch, box)

    else:

        def call():
            return neighbor_list(pos, batch, cutoff, box=box, loop=False)

    _timed(benchmark, f"neighbor_search forward {system.name}", call, atoms=pos.shape[0], impl=impl)
