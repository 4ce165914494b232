"""The fused edge kernels (embedding and interaction messages) against torch arithmetic on the
same edges, forward and backward, under the Triton interpreter."""

import copy

import pytest
import torch

from fastnnp.kernels.common import edge_math
from fastnnp.kernels.tensornet.embedding_messages import embedding_messages
from fastnnp.kernels.tensornet.interaction_messages import interaction_messages
from fastnnp.models.tensornet.cartesian import outer_six
from fastnnp.models.tensornet.reference import COMPONENT_GROUP, TensorNet
from fastnnp.models.tensornet.triton import embedding_filter, interaction_filter
from tests.helpers.kernel_cases import CUTOFF, random_system, reference_table

KINDS = ["open", "periodic", "batched"]


@pytest.fixture(params=[edge_math.GPU_TILE, edge_math.INTERPRETER_TILE], ids=["gpu-tile", "interpreter-tile"])
def tile(request, monkeypatch):
    """Run each kernel with the tile shape the GPU uses and with the interpreter's."""
    monkeypatch.setattr(edge_math, "INTERPRETER_TILE", request.param)
# float32 kernels vs float64 arithmetic on the same float32 inputs.
TOL = dict(rtol=1e-4, atol=1e-5)


def _model(hidden: int, rbf: str, activation: str, cutoff_lower: float) -> TensorNet:
    torch.manual_seed(3)
    model = TensorNet(
        hidden_channels=hidden, num_layers=1, num_rbf=12, rbf_type=rbf, activation=activation,
        cutoff_lower=cutoff_lower, cutoff_upper=CUTOFF, max_z=10,
    )
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    return model.requires_grad_(False)


def _edges(kind: str, cutoff_lower: float):
    z, pos, batch, box = random_system(kind)
    table, vec = reference_table(pos, batch, box, cutoff_lower=cutoff_lower)
    valid = torch.arange(vec.shape[1])[None, :] < table.counts[:, None]
    receiver, slot = valid.nonzero(as_tuple=True)
    sender = table.neighbors[receiver, slot].long()
    return z, table, vec, (receiver, slot, sender)


def _reference_interaction(model, vec, features, edge_ids):
    receiver, slot, sender = edge_ids
    d = vec[receiver, slot].norm(dim=-1)
    filters = model.layers[0]._distance_filter(model.distance_expansion, d)
    return torch.zeros_like(features).index_add(0, receiver, filters[:, COMPONENT_GROUP] * features[sender])


def _reference_embedding(model, vec, z_recv, z_send, edge_ids):
    receiver, slot, sender = edge_ids
    v = vec[receiver, slot]
    d = v.norm(dim=-1)
    unit = v / d[:, None]
    factors = model.tensor_embedding._distance_filter(model.distance_expansion, d) * (z_recv[receiver] + z_send[sender])[:, None]
    messages = torch.cat((factors[:, :1], factors[:, 1:2] * unit[:, :, None], factors[:, 2:] * outer_six(unit)[:, :, None]), 1)
    return z_recv.new_zeros(z_recv.shape[0], 10, z_recv.shape[1]).index_add(0, receiver, messages)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden,rbf,activation,cutoff_lower", [
    (16, "expnorm", "silu", 0.0), (24, "gauss", "ssp", 0.7), (16, "expnorm", "tanh", 0.0), (16, "gauss", "sigmoid", 0.0),
])
def test_interaction_messages_match_torch(tile, kind, hidden, rbf, activation, cutoff_lower):
    model = _model(hidden, rbf, activation, cutoff_lower)
    _, table, vec, edge_ids = _edges(kind, cutoff_lower)
    features = torch.randn(vec.shape[0], 10, hidden)
    vec_k, feat_k = vec.clone().requires_grad_(), features.clone().requires_grad_()
    out = interaction_messages(vec_k, feat_k, table.neighbors, table.counts, interaction_filter(model.layers[0], model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    vec_r, feat_r = vec.double().requires_grad_(), features.double().requires_grad_()
    ref = _reference_interaction(model64, vec_r, feat_r, edge_ids)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    g_vec, g_feat = torch.autograd.grad(out, (vec_k, feat_k), grad.float())
    r_vec, r_feat = torch.autograd.grad(ref, (vec_r, feat_r), grad)
    torch.testing.assert_close(g_feat.double(), r_feat, **TOL)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden,rbf,cutoff_lower", [(16, "expnorm", 0.0), (20, "gauss", 0.7)])
def test_embedding_messages_match_torch(tile, kind, hidden, rbf, cutoff_lower):
    model = _model(hidden, rbf, "silu", cutoff_lower)
    _, table, vec, edge_ids = _edges(kind, cutoff_lower)
    z_recv, z_send = torch.randn(vec.shape[0], hidden), torch.randn(vec.shape[0], hidden)
    vec_k = vec.clone().requires_grad_()
    out = embedding_messages(vec_k, z_recv, z_send, table.neighbors, table.counts, embedding_filter(model.tensor_embedding, model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    vec_r = vec.double().requires_grad_()
    ref = _reference_embedding(model64, vec_r, z_recv.double(), z_send.double(), edge_ids)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    (g_vec,) = torch.autograd.grad(out, vec_k, grad.float())
    (r_vec,) = torch.autograd.grad(ref, vec_r, grad)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)
