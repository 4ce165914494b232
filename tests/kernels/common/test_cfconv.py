"""The continuous-filter convolution kernels against their float64 torch reference on the same
edges, forward and backward (edge vectors and features), under the Triton interpreter: each
aggregation, the exact filter with one linear (neighbour embedding) and two (GN's CFConv net),
and radial tables (uniform and rate > 0, with and without a lower cutoff), on open, periodic
triclinic and batched systems; plus opcheck of the registered ops and the input checks."""

import copy

import pytest
import torch

from fastnnp.kernels.common import cfconv as cfconv_module
from fastnnp.kernels.common import cfconv_reference as reference
from fastnnp.kernels.common.cfconv import cfconv, conv_filter
from fastnnp.kernels.common.radial_table import kernel_table
from fastnnp.kernels.tensornet.reference import table_edges
from fastnnp.models.common.activations import kernel_code
from fastnnp.models.common.radial_table import basis_rate, build_radial_table
from fastnnp.models.gn.reference import GraphNetwork
from tests.helpers.kernel_cases import CUTOFF, random_system, reference_table

KINDS = ["open", "periodic", "batched"]
AGGRS = ["add", "mean", "max"]
# float32 kernels vs float64 arithmetic on the same float32 inputs (as TensorNet's kernel tests).
TOL = dict(rtol=1e-4, atol=1e-5)
# Few pieces: the kernel and the reference read the same table, so its error does not matter.
PIECES = 48


# (tile, system): every system with the interpreter's tile; the tile the GPU launch uses
# (:func:`cfconv.gpu_launch`) on the periodic one (a reduced form: the cases take minutes
# under the interpreter, and the tile changes the program shape, not the systems' geometry).
TILE_KINDS = [("interpreter-tile", kind) for kind in KINDS] + [("gpu-tile", "periodic")]


def use_tile(tile: str, monkeypatch) -> None:
    if tile == "gpu-tile":
        monkeypatch.setattr(cfconv_module, "tile_shape", lambda gpu_tile: gpu_tile)


def _model(hidden: int, rbf: str, activation: str, cutoff_lower: float) -> GraphNetwork:
    """A one-layer GN (seeded, frozen) with its weights perturbed off their initial values."""
    torch.manual_seed(3)
    model = GraphNetwork(
        hidden_channels=hidden, num_filters=hidden, num_layers=1, num_rbf=12, rbf_type=rbf,
        activation=activation, cutoff_lower=cutoff_lower, cutoff_upper=CUTOFF, max_z=10,
    )
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    return model.requires_grad_(False)


def _system(kind: str, cutoff_lower: float):
    _, pos, batch, box = random_system(kind)
    table, vec = reference_table(pos, batch, box, cutoff_lower=cutoff_lower)
    return table, vec, table_edges(table.neighbors, table.counts)


def _filters(model: GraphNetwork, which: str):
    """(kernel filter, the float64 model's module with ``distance_filter``) of the interaction
    ("two" linears) or the neighbour embedding ("one")."""
    expansion, lower, upper = model.distance_expansion, model.cutoff_lower, model.cutoff_upper
    if which == "two":
        block = model.interactions[0]
        return conv_filter(expansion, block.mlp[0], lower, upper, block.mlp[2], kernel_code(block.act)), "interactions.0.conv"
    return conv_filter(expansion, model.neighbor_embedding.distance_proj, lower, upper), "neighbor_embedding"


def _compare(flt, filter_fn, vec, table, edges, channels: int, aggr: str) -> None:
    """Kernel (float32) against ``filter_fn``'s reference (float64): output and both gradients."""
    h = torch.randn(vec.shape[0], channels)
    vec_k, h_k = vec.clone().requires_grad_(), h.clone().requires_grad_()
    out = cfconv(vec_k, h_k, table.neighbors, table.counts, flt, aggr)
    vec_r, h_r = vec.double().requires_grad_(), h.double().requires_grad_()
    ref = reference.cfconv(filter_fn, vec_r, h_r, edges, aggr)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(out.double(), ref, **TOL)
    grad = torch.randn_like(ref)
    g_vec, g_h = torch.autograd.grad(out, (vec_k, h_k), grad.float())
    r_vec, r_h = torch.autograd.grad(ref, (vec_r, h_r), grad)
    assert r_vec.abs().max() > 1e-2 and r_h.abs().max() > 1e-2
    torch.testing.assert_close(g_h.double(), r_h, **TOL)
    torch.testing.assert_close(g_vec.double(), r_vec, **TOL)


@pytest.mark.parametrize("tile,kind", TILE_KINDS)
@pytest.mark.parametrize("aggr", AGGRS)
@pytest.mark.parametrize("which,rbf,activation,cutoff_lower", [
    ("two", "expnorm", "silu", 0.0), ("two", "gauss", "ssp", 0.7), ("one", "expnorm", "silu", 0.0), ("one", "gauss", "silu", 0.7),
], ids=["two-expnorm-silu", "two-gauss-ssp-lower", "one-expnorm", "one-gauss-lower"])
def test_exact_filter_matches_torch(monkeypatch, tile, kind, aggr, which, rbf, activation, cutoff_lower):
    use_tile(tile, monkeypatch)
    model = _model(16, rbf, activation, cutoff_lower)
    table, vec, edges = _system(kind, cutoff_lower)
    flt, path = _filters(model, which)
    model64 = copy.deepcopy(model).double()
    _compare(flt, reference.exact_filter(model64.get_submodule(path), model64.distance_expansion), vec, table, edges, 16, aggr)


@pytest.mark.parametrize("aggr", AGGRS)
def test_two_linears_of_other_widths(aggr):
    """Hidden width H != F and F not a power of two (masks of the hidden chunks and channels)."""
    torch.manual_seed(4)
    model = _model(16, "expnorm", "tanh", 0.0)
    block = model.interactions[0]
    first, second = torch.nn.Linear(12, 24), torch.nn.Linear(24, 20)
    for p in (*first.parameters(), *second.parameters()):
        p.requires_grad_(False)
    net = torch.nn.Sequential(first, block.act, second)
    flt = conv_filter(model.distance_expansion, first, 0.0, CUTOFF, second, kernel_code(block.act))
    table, vec, edges = _system("batched", 0.0)
    expansion = copy.deepcopy(model.distance_expansion).double()
    net64, cutoff = copy.deepcopy(net).double(), block.conv.cutoff

    def filter_fn(d):
        return net64(expansion(d)) * cutoff(d)[:, None]

    _compare(flt, filter_fn, vec, table, edges, 20, aggr)


# (filter, basis, table rate, lower cutoff): expnorm bases get rate > 0 tables, Gaussians rate 0;
# each filter with and without a lower cutoff.
TABLES = [("two", "expnorm", "rate", 0.0), ("one", "expnorm", "rate", 0.7), ("two", "gauss", "uniform", 0.7),
          ("one", "gauss", "uniform", 0.0)]


@pytest.mark.parametrize("tile,kind", TILE_KINDS)
@pytest.mark.parametrize("aggr", AGGRS)
@pytest.mark.parametrize("which,rbf,rate_kind,cutoff_lower", TABLES,
                         ids=["two-rate-nolower", "one-rate-lower", "two-uniform-lower", "one-uniform-nolower"])
def test_table_matches_torch(monkeypatch, tile, kind, aggr, which, rbf, rate_kind, cutoff_lower):
    use_tile(tile, monkeypatch)
    model = _model(16, rbf, "silu", cutoff_lower)
    _, path = _filters(model, which)
    radial_filter = {f.path: f for f in copy.deepcopy(model).double().radial_filters()}[path]
    rate = basis_rate(model.distance_expansion) if rate_kind == "rate" else 0.0
    assert (rate > 0) == (rate_kind == "rate")
    table64 = build_radial_table(radial_filter.fn, radial_filter.lower, radial_filter.upper, PIECES, rate, path, True)
    radial = table64.float()
    grid, vec, edges = _system(kind, cutoff_lower)
    _compare(kernel_table(radial), reference.table_filter(radial), vec, grid, edges, 16, aggr)


def test_no_neighbours_gives_zero():
    """Atoms with counts 0 get 0 for every aggregation (the initial zero), and a zero gradient."""
    model = _model(16, "expnorm", "silu", 0.0)
    flt, _ = _filters(model, "two")
    N, K = 5, 4
    neighbors = torch.arange(N, dtype=torch.int32)[:, None].repeat(1, K)
    counts = torch.zeros(N, dtype=torch.int32)
    vec = torch.zeros(N, K, 3, requires_grad=True)
    h = torch.randn(N, 16, requires_grad=True)
    for aggr in AGGRS:
        out = cfconv(vec, h, neighbors, counts, flt, aggr)
        assert torch.equal(out, torch.zeros(N, 16))
        g_vec, g_h = torch.autograd.grad(out, (vec, h), torch.ones_like(out))
        assert torch.equal(g_vec, torch.zeros_like(vec)) and torch.equal(g_h, torch.zeros_like(h))


def test_max_never_below_zero():
    """Where every message of an atom is negative (W = cutoff > 0, h < 0) "max" gives 0 and no gradient."""
    model = _model(16, "expnorm", "silu", 0.0)
    flt, _ = _filters(model, "one")
    flt = flt._replace(w1=torch.zeros_like(flt.w1), b1=torch.ones_like(flt.b1))
    table, vec, _ = _system("open", 0.0)
    assert table.counts.min() > 0
    h = (-torch.rand(vec.shape[0], 16) - 0.1).requires_grad_()
    vec = vec.clone().requires_grad_()
    out = cfconv(vec, h, table.neighbors, table.counts, flt, "max")
    assert torch.equal(out, torch.zeros_like(out))
    g_vec, g_h = torch.autograd.grad(out.sum(), (vec, h))
    assert torch.equal(g_h, torch.zeros_like(g_h)) and torch.equal(g_vec, torch.zeros_like(g_vec))
    # the same filter on -h: every message positive, the maximum is the largest one
    assert (cfconv(vec, -h, table.neighbors, table.counts, flt, "max") > 0).all()


def test_bad_arguments_are_refused():
    model = _model(16, "expnorm", "silu", 0.0)
    flt, _ = _filters(model, "two")
    table, vec, _ = _system("open", 0.0)
    h = torch.randn(vec.shape[0], 16)
    with pytest.raises(ValueError, match="unknown aggr 'sum'.*add, mean, max"):
        cfconv(vec, h, table.neighbors, table.counts, flt, "sum")
    with pytest.raises(ValueError, match="float32 only"):
        cfconv(vec.double(), h, table.neighbors, table.counts, flt, "add")
    with pytest.raises(ValueError, match="filter has 16 channels, the features 8"):
        cfconv(vec, h[:, :8], table.neighbors, table.counts, flt, "add")
    with pytest.raises(ValueError, match="int32"):
        cfconv(vec, h, table.neighbors.long(), table.counts, flt, "add")
    with pytest.raises(ValueError, match="vec \\[N, K, 3\\]"):
        cfconv(vec[:-1], h, table.neighbors, table.counts, flt, "add")


@pytest.mark.parametrize("aggr", AGGRS)
@pytest.mark.parametrize("which", ["two", "one", "table"])
def test_opcheck(aggr, which):
    """Schema, fake tensors, autograd registration and AOT dispatch of fastnnp::cfconv."""
    model = _model(16, "expnorm", "silu", 0.0)
    if which == "table":
        radial_filter = copy.deepcopy(model).double().radial_filters()[0]
        table64 = build_radial_table(radial_filter.fn, radial_filter.lower, radial_filter.upper, PIECES,
                                     basis_rate(model.distance_expansion), radial_filter.path, True)
        flt = kernel_table(table64.float())
    else:
        flt, _ = _filters(model, which)
    table, vec, _ = _system("open", 0.0)
    h = torch.randn(vec.shape[0], 16, requires_grad=True)
    vec = vec.clone().requires_grad_()
    args = (vec, h, table.neighbors, table.counts, *cfconv_module.pack(flt), aggr, "ieee")
    torch.library.opcheck(torch.ops.fastnnp.cfconv.default, args)
    out, arg = torch.ops.fastnnp.cfconv(*args)
    backward_args = (torch.randn_like(out), vec.detach(), h.detach(), table.neighbors, table.counts, arg,
                     *cfconv_module.pack(flt), aggr, "ieee")
    torch.library.opcheck(torch.ops.fastnnp.cfconv_backward.default, backward_args)
