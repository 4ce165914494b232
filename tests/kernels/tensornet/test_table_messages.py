"""The radial-table variants of the embedding and interaction message kernels against their
float64 torch references (the same float32 table, read by torch in float64), forward and
backward (edge vectors; features for the interaction), under the Triton interpreter: table
variables uniform in d (rate 0) and in exp(-rate d) (rate > 0), with and without a lower cutoff."""

import copy

import pytest
import torch

from fastnnp.kernels.common import edge_math
from fastnnp.kernels.common.radial_table import kernel_table
from fastnnp.kernels.tensornet import reference
from fastnnp.kernels.tensornet.embedding_messages import embedding_messages
from fastnnp.kernels.tensornet.interaction_messages import interaction_messages
from fastnnp.kernels.tensornet.table_tiles import TABLE_GPU_TILE
from fastnnp.models.common.radial_table import basis_rate, build_radial_table

KINDS = ["open", "periodic", "batched"]
# float32 kernels vs float64 arithmetic on the same float32 inputs (as the MLP kernels' tests).
TOL = dict(rtol=1e-4, atol=1e-5)
# (basis, table rate, lower cutoff): expnorm bases get rate > 0 tables, Gaussians rate 0.
TABLES = [("expnorm", "rate", 0.0), ("expnorm", "rate", 0.7), ("gauss", "uniform", 0.0), ("gauss", "uniform", 0.7)]
IDS = ["rate-nolower", "rate-lower", "uniform-nolower", "uniform-lower"]
# Few pieces: the kernel and the reference read the same table, so its error does not matter.
PIECES = 48


# Each system with the interpreter's tile, and with the GPU's (1 receiver x 4 slots per step, so
# many small steps under the interpreter) on the open and batched systems only, to stay fast.
TILE_KINDS = [("gpu-tile", kind) for kind in ("open", "batched")] + [("interpreter-tile", kind) for kind in KINDS]
TILES = {"gpu-tile": TABLE_GPU_TILE, "interpreter-tile": edge_math.INTERPRETER_TILE}


@pytest.fixture(params=TILE_KINDS, ids=[f"{tile}-{kind}" for tile, kind in TILE_KINDS])
def kind(request, monkeypatch):
    """The system kind, its table kernels run with the tile shape ``request.param[0]``."""
    tile, kind = request.param
    monkeypatch.setattr(edge_math, "INTERPRETER_TILE", TILES[tile])
    return kind


def _table(model, index: int, rate_kind: str):
    """A float32 table of ``model``'s radial filter ``index`` (0 the embedding, 1 the layer)."""
    radial_filter = copy.deepcopy(model).double().radial_filters()[index]
    rate = basis_rate(model.distance_expansion) if rate_kind == "rate" else 0.0
    assert (rate > 0) == (rate_kind == "rate")
    table = build_radial_table(
        radial_filter.fn, radial_filter.lower, radial_filter.upper, PIECES, rate, radial_filter.path, True
    )
    return table.float()


@pytest.mark.parametrize("rbf,rate_kind,cutoff_lower", TABLES, ids=IDS)
def test_table_interaction_messages_match_torch(random_model, system_edges, kind, rbf, rate_kind, cutoff_lower):
    hidden = 16
    model = random_model(hidden, rbf, "silu", cutoff_lower)
    table = _table(model, 1, rate_kind)
    grid, vec, edges = system_edges(kind, cutoff_lower)
    features = torch.randn(vec.shape[0], 10, hidden)
    vec_k, feat_k = vec.clone().requires_grad_(), features.clone().requires_grad_()
    out = interaction_messages(vec_k, feat_k, grid.neighbors, grid.counts, kernel_table(table))
    vec_r, feat_r = vec.double().requires_grad_(), features.double().requires_grad_()
    ref = reference.table_interaction_messages(table, vec_r, feat_r, edges)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    g_vec, g_feat = torch.autograd.grad(out, (vec_k, feat_k), grad.float())
    r_vec, r_feat = torch.autograd.grad(ref, (vec_r, feat_r), grad)
    assert r_vec.abs().max() > 1e-2
    torch.testing.assert_close(g_feat.double(), r_feat, **TOL)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)


@pytest.mark.parametrize("rbf,rate_kind,cutoff_lower", TABLES, ids=IDS)
def test_table_embedding_messages_match_torch(random_model, system_edges, kind, rbf, rate_kind, cutoff_lower):
    hidden = 20
    model = random_model(hidden, rbf, "silu", cutoff_lower)
    table = _table(model, 0, rate_kind)
    grid, vec, edges = system_edges(kind, cutoff_lower)
    z_recv, z_send = torch.randn(vec.shape[0], hidden), torch.randn(vec.shape[0], hidden)
    vec_k = vec.clone().requires_grad_()
    out = embedding_messages(vec_k, z_recv, z_send, grid.neighbors, grid.counts, kernel_table(table))
    vec_r = vec.double().requires_grad_()
    ref = reference.table_embedding_messages(table, vec_r, z_recv.double(), z_send.double(), edges)
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    (g_vec,) = torch.autograd.grad(out, vec_k, grad.float())
    (r_vec,) = torch.autograd.grad(ref, vec_r, grad)
    assert r_vec.abs().max() > 1e-2
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)
