"""The fused charged interaction-messages kernel against its float64 torch reference on the same
edges, forward and backward (edge vectors, features and both per-atom charge terms), under the
Triton interpreter: open, periodic triclinic and batched systems, both tile shapes."""

import copy

import pytest
import torch

from fastnnp.kernels.common import edge_math
from fastnnp.kernels.common.op_args import pack
from fastnnp.kernels.tensornet.reference import table_edges
from fastnnp.kernels.tensornet2 import reference
from fastnnp.kernels.tensornet2.charged_messages import charged_messages
from fastnnp.models.tensornet2.reference import TensorNet2
from fastnnp.models.tensornet2.triton import charged_filter
from tests.helpers.kernel_cases import CUTOFF, random_system, reference_table

# float32 kernels vs float64 arithmetic on the same float32 inputs (TensorNet's kernel tolerance).
TOL = dict(rtol=1e-4, atol=1e-5)


def _model(hidden: int, rbf: str, activation: str, cutoff_lower: float) -> TensorNet2:
    torch.manual_seed(3)
    model = TensorNet2(
        hidden_channels=hidden, q_dim=2, num_layers=1, num_rbf=12, rbf_type=rbf, activation=activation,
        cutoff_lower=cutoff_lower, cutoff_upper=CUTOFF, max_z=10,
    )
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    return model.requires_grad_(False)


GPU, INTERPRETER = edge_math.GPU_TILE, edge_math.INTERPRETER_TILE


# The GPU's tile (1, 16) on the two cheaper systems (the interpreter runs it slowly), the
# interpreter's (8, 32) on all: every system kind, both bases, every activation, a lower cutoff.
@pytest.mark.parametrize("tile,kind,hidden,rbf,activation,cutoff_lower", [
    (GPU, "open", 16, "expnorm", "silu", 0.0),
    (GPU, "batched", 24, "expnorm", "tanh", 0.0),
    (INTERPRETER, "open", 16, "expnorm", "silu", 0.0),
    (INTERPRETER, "periodic", 16, "gauss", "ssp", 0.7),
    (INTERPRETER, "batched", 24, "expnorm", "tanh", 0.0),
    (INTERPRETER, "batched", 16, "gauss", "sigmoid", 0.0),
])
def test_charged_messages_match_torch(monkeypatch, tile, kind, hidden, rbf, activation, cutoff_lower):
    monkeypatch.setattr(edge_math, "INTERPRETER_TILE", tile)
    model = _model(hidden, rbf, activation, cutoff_lower)
    _, pos, batch, box = random_system(kind)
    table, vec = reference_table(pos, batch, box, cutoff_lower=cutoff_lower)
    edges = table_edges(table.neighbors, table.counts)
    n = vec.shape[0]
    features = torch.randn(n, 10, hidden)
    # charge terms of the size the layer's charge columns give (|q| ~ 1)
    recv, send = model.layers[0].charge_terms(torch.randn(n, 2))
    assert (recv - send).abs().mean() > 0.1  # the filter's asymmetry is exercised
    inputs = (vec, features, recv, send)
    ours = [t.clone().requires_grad_() for t in inputs]
    out = charged_messages(ours[0], ours[1], ours[2], ours[3], table.neighbors, table.counts,
                           charged_filter(model.layers[0], model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    refs = [t.double().requires_grad_() for t in inputs]
    expected = reference.charged_messages(model64.layers[0], model64.distance_expansion, *refs, edges)
    torch.testing.assert_close(out.double(), expected, **TOL)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, ours, grad.float())
    want = torch.autograd.grad(expected, refs, grad)
    for name, g, w in zip(("vec", "features", "recv", "send"), got, want):
        assert w.abs().max() > 1e-3, name
        torch.testing.assert_close(g.double(), w, **TOL, msg=lambda m: f"{name}: {m}")


def test_tiny_table_one_atom_and_isolated_pair():
    """Degenerate tables: an atom with no neighbours (zero messages, zero gradients) beside a pair."""
    model = _model(16, "expnorm", "silu", 0.0)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.3, -0.2], [9.0, 9.0, 9.0]])
    batch = torch.zeros(3, dtype=torch.long)
    table, vec = reference_table(pos, batch, None)
    assert table.counts.tolist() == [1, 1, 0]
    features = torch.randn(3, 10, 16)
    recv, send = model.layers[0].charge_terms(torch.randn(3, 2))
    inputs = [t.clone().requires_grad_() for t in (vec, features, recv, send)]
    out = charged_messages(*inputs, table.neighbors, table.counts, charged_filter(model.layers[0], model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    refs = [t.double().requires_grad_() for t in (vec, features, recv, send)]
    expected = reference.charged_messages(model64.layers[0], model64.distance_expansion, *refs,
                                          table_edges(table.neighbors, table.counts))
    torch.testing.assert_close(out.double(), expected, **TOL)
    assert out[2].abs().max() == 0
    grad = torch.randn_like(expected)
    for g, w in zip(torch.autograd.grad(out, inputs, grad.float()), torch.autograd.grad(expected, refs, grad)):
        torch.testing.assert_close(g.double(), w, **TOL)


def test_opcheck():
    """Both registered ops: schema, fake tensors, autograd registration (forward op), AOT dispatch."""
    model = _model(16, "expnorm", "silu", 0.0)
    _, pos, batch, box = random_system("open")
    table, vec = reference_table(pos, batch, box)
    n = vec.shape[0]
    recv, send = model.layers[0].charge_terms(torch.randn(n, 2))
    packed = pack(charged_filter(model.layers[0], model.distance_expansion))
    inputs = [t.contiguous().requires_grad_() for t in (vec, torch.randn(n, 10, 16), recv, send)]
    torch.library.opcheck(torch.ops.fastnnp.tensornet2_messages, (*inputs, table.neighbors, table.counts, *packed, "ieee"))
    grad = torch.randn(n, 10, 16)
    plain = [t.detach() for t in inputs]
    args = (grad, plain[0], plain[1], plain[2], plain[3], table.neighbors, table.counts, *packed, "ieee")
    torch.library.opcheck(torch.ops.fastnnp.tensornet2_messages_backward, args)
