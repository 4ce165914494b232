"""The fused embedding-messages kernel against its torch reference on the same edges, forward
and backward, under the Triton interpreter."""

import copy

import pytest
import torch

from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.embedding_messages import embedding_messages
from fastnnp.models.tensornet.triton import embedding_filter

KINDS = ["open", "periodic", "batched"]
# float32 kernels vs float64 arithmetic on the same float32 inputs.
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden,rbf,cutoff_lower", [(16, "expnorm", 0.0), (20, "gauss", 0.7)])
def test_embedding_messages_match_torch(tile, random_model, system_edges, kind, hidden, rbf, cutoff_lower):
    model = random_model(hidden, rbf, "silu", cutoff_lower)
    table, vec, edges = system_edges(kind, cutoff_lower)
    z_recv, z_send = torch.randn(vec.shape[0], hidden), torch.randn(vec.shape[0], hidden)
    vec_k = vec.clone().requires_grad_()
    out = embedding_messages(vec_k, z_recv, z_send, table.neighbors, table.counts, embedding_filter(model.tensor_embedding, model.distance_expansion))
    model64 = copy.deepcopy(model).double()
    vec_r = vec.double().requires_grad_()
    ref = reference.embedding_messages(
        model64.tensor_embedding, model64.distance_expansion, vec_r, z_recv.double(), z_send.double(), edges
    )
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    (g_vec,) = torch.autograd.grad(out, vec_k, grad.float())
    (r_vec,) = torch.autograd.grad(ref, vec_r, grad)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)
