"""The fused interaction-messages kernel against its torch reference on the same edges,
forward and backward, under the Triton interpreter."""

import copy

import pytest
import torch

from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.interaction_messages import interaction_messages
from fastnnp.models.tensornet.triton import interaction_filter

KINDS = ["open", "periodic", "batched"]
# float32 kernels vs float64 arithmetic on the same float32 inputs.
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden,rbf,activation,cutoff_lower", [
    (16, "expnorm", "silu", 0.0), (24, "gauss", "ssp", 0.7), (16, "expnorm", "tanh", 0.0), (16, "gauss", "sigmoid", 0.0),
])
def test_interaction_messages_match_torch(tile, random_model, system_edges, kind, hidden, rbf, activation, cutoff_lower):
    model = random_model(hidden, rbf, activation, cutoff_lower)
    table, vec, edges = system_edges(kind, cutoff_lower)
    features = torch.randn(vec.shape[0], 10, hidden)
    vec_k, feat_k = vec.clone().requires_grad_(), features.clone().requires_grad_()
    out = interaction_messages(vec_k, feat_k, table.neighbors, table.counts, interaction_filter(model.layers[0], model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    vec_r, feat_r = vec.double().requires_grad_(), features.double().requires_grad_()
    ref = reference.interaction_messages(model64.layers[0], model64.distance_expansion, vec_r, feat_r, edges)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    g_vec, g_feat = torch.autograd.grad(out, (vec_k, feat_k), grad.float())
    r_vec, r_feat = torch.autograd.grad(ref, (vec_r, feat_r), grad)
    torch.testing.assert_close(g_feat.double(), r_feat, **TOL)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)
