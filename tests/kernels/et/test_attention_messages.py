"""The fused ET attention-message kernels against their float64 torch reference on the same
table edges, forward and backward (q, k, v, vector features, edge vectors), under the Triton
interpreter: every distance_influence, vector_cutoff on and off, the exact filter and radial
tables (rate > 0 and uniform), every kernel activation as filter and attention activation,
padded head layouts, open / periodic triclinic / batched systems, the GPU tiles; and the
registered ops under ``torch.library.opcheck``."""

import copy

import pytest
import torch

from fastnnp.kernels.common import edge_math
from fastnnp.kernels.et import attention_messages as attention_module
from fastnnp.kernels.et import reference
from fastnnp.kernels.et.attention_messages import GPU_TILE, attention_messages, compile_cases, head_blocks
from fastnnp.kernels.tensornet.reference import table_edges
from fastnnp.models.common.radial_table import basis_rate, build_radial_table
from fastnnp.models.et.reference import EquivariantTransformer
from fastnnp.models.et.triton import layer_attention
from tests.helpers.kernel_cases import CUTOFF, random_system, reference_table

KINDS = ["open", "periodic", "batched"]
# float32 kernels vs float64 arithmetic on the same float32 inputs (as TensorNet's kernel tests).
TOL = dict(rtol=1e-4, atol=1e-5)
# Few pieces: kernel and reference read the same table, so its error against the filter does not matter.
PIECES = 48


# Layer configurations: distance_influence, vector_cutoff, filter ("exact", or a "rate" / "uniform"
# table), activation, attn_activation, rbf_type, cutoff_lower, channels f and heads h.
VARIANTS = {
    "both-exact": dict(di="both", vc=False, form="exact", act="silu", attn="silu", rbf="expnorm", lower=0.0, f=16, h=4),
    "both-vc-rate": dict(di="both", vc=True, form="rate", act="silu", attn="silu", rbf="expnorm", lower=0.0, f=16, h=4),
    "keys-exact-gauss-lower": dict(di="keys", vc=False, form="exact", act="ssp", attn="tanh", rbf="gauss", lower=0.7,
                                   f=16, h=2),
    "values-vc-exact": dict(di="values", vc=True, form="exact", act="tanh", attn="sigmoid", rbf="expnorm", lower=0.0,
                            f=24, h=4),
    "none": dict(di="none", vc=False, form="exact", act="silu", attn="ssp", rbf="expnorm", lower=0.0, f=16, h=4),
    "none-vc-lower": dict(di="none", vc=True, form="exact", act="silu", attn="silu", rbf="expnorm", lower=0.7, f=16,
                          h=4),
    "keys-vc-uniform-lower": dict(di="keys", vc=True, form="uniform", act="silu", attn="silu", rbf="gauss", lower=0.7,
                                  f=16, h=4),
    "values-rate": dict(di="values", vc=False, form="rate", act="sigmoid", attn="tanh", rbf="expnorm", lower=0.0, f=24,
                        h=3),
    "both-vc-exact-gauss-lower": dict(di="both", vc=True, form="exact", act="sigmoid", attn="ssp", rbf="gauss",
                                      lower=0.7, f=24, h=3),
    "both-uniform-lower": dict(di="both", vc=False, form="uniform", act="ssp", attn="sigmoid", rbf="gauss", lower=0.7,
                               f=16, h=4),
}


def _model(v: dict) -> EquivariantTransformer:
    """A one-layer ET (seeded, float32, frozen, weights perturbed), with a table of its layer's
    filter when ``v["form"]`` asks for one."""
    torch.manual_seed(3)
    model = EquivariantTransformer(
        hidden_channels=v["f"], num_layers=1, num_rbf=12, rbf_type=v["rbf"], activation=v["act"],
        attn_activation=v["attn"], num_heads=v["h"], distance_influence=v["di"], cutoff_lower=v["lower"],
        cutoff_upper=CUTOFF, max_z=10, vector_cutoff=v["vc"],
    )
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    model.requires_grad_(False)
    if v["form"] != "exact":
        (radial_filter,) = [r for r in copy.deepcopy(model).double().radial_filters() if r.path.startswith("attention")]
        rate = basis_rate(model.distance_expansion) if v["form"] == "rate" else 0.0
        assert (rate > 0) == (v["form"] == "rate")
        table = build_radial_table(radial_filter.fn, radial_filter.lower, radial_filter.upper, PIECES, rate,
                                   radial_filter.path, radial_filter.zero_outside)
        model.attention_layers[0].radial_table = table.float()
    return model


def _check(v: dict, kind: str, isolated: bool = False) -> None:
    model = _model(v)
    _, pos, batch, box = random_system(kind)
    if isolated:  # an atom without neighbours (counts 0): its self loop alone
        pos, batch = torch.cat([pos, torch.tensor([[40.0, 0.0, 0.0]])]), torch.cat([batch, batch[-1:]])
    table, vec = reference_table(pos, batch, box, cutoff_lower=v["lower"])
    n, f = pos.shape[0], v["f"]
    generator = torch.Generator().manual_seed(7)
    inputs = [torch.randn(shape, generator=generator) for shape in ((n, f), (n, f), (n, 3 * f), (n, 3, f))] + [vec]
    kernel_in = [t.clone().requires_grad_() for t in inputs]
    attention = layer_attention(model.attention_layers[0], model.distance_expansion)
    m, mvec = attention_messages(*kernel_in, table.neighbors, table.counts, attention)
    model64 = copy.deepcopy(model).double()
    ref_in = [t.double().requires_grad_() for t in inputs]
    ref_m, ref_mvec = reference.attention_messages(
        model64.attention_layers[0], model64.distance_expansion, *ref_in, table_edges(table.neighbors, table.counts)
    )
    torch.testing.assert_close(m.double(), ref_m, **TOL)
    torch.testing.assert_close(mvec.double(), ref_mvec, **TOL)
    grads = (torch.randn(ref_m.shape, generator=generator, dtype=torch.float64),
             torch.randn(ref_mvec.shape, generator=generator, dtype=torch.float64))
    got = torch.autograd.grad((m, mvec), kernel_in, [g.float() for g in grads])
    expected = torch.autograd.grad((ref_m, ref_mvec), ref_in, grads)
    for name, a, b in zip(("q", "k", "v", "vectors", "edge_vec"), got, expected):
        assert b.abs().max() > 1e-2, name
        torch.testing.assert_close(a.double(), b, **TOL, msg=lambda text: f"grad {name}: {text}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_attention_messages_match_torch(name, kind):
    _check(VARIANTS[name], kind)


@pytest.mark.parametrize("name", ["both-exact", "both-vc-rate", "none-vc-lower"])
@pytest.mark.parametrize("kind", ["open", "batched"])
def test_gpu_tiles_match_torch(monkeypatch, name, kind):
    """The tiles the GPU runs (one receiver per program: the self loops on [1, BF] rows)."""
    v = VARIANTS[name]
    monkeypatch.setattr(edge_math, "INTERPRETER_TILE", GPU_TILE)
    _check(v, kind)


@pytest.mark.parametrize("name", ["both-exact", "values-rate"])
def test_isolated_atom(name):
    _check(VARIANTS[name], "open", isolated=True)


def test_reference_self_loops_count():
    """The reference's self loops: with no table edges at all, m_i is the self loop's alone."""
    v = VARIANTS["none"]
    model = _model(v).double()
    layer = model.attention_layers[0]
    n, f = 3, v["f"]
    q, k, v_, vectors = torch.randn(n, f).double(), torch.randn(n, f).double(), torch.randn(n, 3 * f).double(), \
        torch.randn(n, 3, f).double()
    empty = torch.zeros(0, dtype=torch.long)
    m, mvec = reference.attention_messages(layer, model.distance_expansion, q, k, v_, vectors,
                                           torch.zeros(n, 1, 3).double(), (empty, empty, empty))
    attn = layer.attn_activation((q * k).reshape(n, 4, 4).sum(-1))  # cutoff(0) = 1
    s, u1, _ = torch.split(v_.reshape(n, 4, 12), 4, dim=2)
    torch.testing.assert_close(m, (s * attn[:, :, None]).reshape(n, f))
    torch.testing.assert_close(mvec, vectors * u1.reshape(n, 1, f))


def _op_inputs(form: str):
    v = dict(VARIANTS["both-exact"], form=form)
    model = _model(v)
    _, pos, batch, box = random_system("open")
    table, vec = reference_table(pos, batch, box)
    n, f = pos.shape[0], v["f"]
    tensors = [torch.randn(n, f), torch.randn(n, f), torch.randn(n, 3 * f), torch.randn(n, 3, f), vec]
    return model, table, tensors


@pytest.mark.parametrize("form", ["exact", "rate"])
def test_opcheck(form, monkeypatch):
    model, table, tensors = _op_inputs(form)
    attention = layer_attention(model.attention_layers[0], model.distance_expansion)
    calls = []
    original = torch.ops.fastnnp.et_attention.default

    # record the registered op's arguments as the wrapper passes them
    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(attention_module, "_attention_op", spy)
    attention_messages(*tensors, table.neighbors, table.counts, attention)
    (args,) = calls
    args = tuple(a.detach().clone().requires_grad_(i < 5) if isinstance(a, torch.Tensor) else a
                 for i, a in enumerate(args))
    torch.library.opcheck(torch.ops.fastnnp.et_attention.default, args)
    m, mvec = original(*args)
    grads = (torch.randn_like(m), torch.randn_like(mvec))
    backward_args = (*grads, *(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    torch.library.opcheck(torch.ops.fastnnp.et_attention_backward.default, backward_args)


def test_bad_shapes_are_refused():
    model, table, (q, k, v, vectors, vec) = _op_inputs("exact")
    attention = layer_attention(model.attention_layers[0], model.distance_expansion)
    with pytest.raises(ValueError, match="needs q, k"):
        attention_messages(q, k, v[:, :16], vectors, vec, table.neighbors, table.counts, attention)
    with pytest.raises(ValueError, match="not divisible"):
        attention_messages(q, k, v, vectors, vec, table.neighbors, table.counts, attention._replace(num_heads=3))
    with pytest.raises(ValueError, match="filter description"):
        attention_messages(q, k, v, vectors, vec, table.neighbors, table.counts, attention._replace(filter=None))


def test_head_blocks():
    assert head_blocks(128, 8) == (8, 16)
    assert head_blocks(24, 3) == (4, 8)
    assert head_blocks(16, 4) == (4, 4)
    assert head_blocks(8, 1) == (1, 8)


def test_compile_cases_name_real_arguments():
    cases = compile_cases(128, 32)
    assert len(cases) == 6
    for case in cases:
        names = set(case.fn.arg_names)
        assert set(case.constexprs) <= names
        assert set(case.floats) <= names and set(case.pointers) <= names
