"""Parity of EquivariantTransformer / GraphNetwork with TorchMD-Net 3.1's TorchMD_ET / TorchMD_GN.

Each case builds TorchMD-Net's module with seeded random weights (every parameter and buffer
perturbed, so zero-initialised biases, unit LayerNorms and default RBFs are not trivially
special), loads its state dict minus ``distance.box`` strictly into ours, and compares x, vec
and the gradient of a fixed random projection of (x, vec) with respect to the positions.
"""


import pytest
import torch

from fastnnp.models.et import reference as et_module
from fastnnp.models.gn import reference as gn_module
from fastnnp.models.et.reference import EquivariantTransformer
from fastnnp.models.gn.reference import GraphNetwork
from fastnnp.neighbors import NeighborList

from torchmdnet.models import torchmd_et
from torchmdnet.models import torchmd_gn

MAX_Z = 12
CUTOFF = 3.0
TOL = {torch.float32: 1e-5, torch.float64: 1e-9}

ET_SMALL = dict(hidden_channels=16, num_layers=2, num_rbf=8, num_heads=4, max_z=MAX_Z,
                cutoff_upper=CUTOFF)
GN_SMALL = dict(hidden_channels=16, num_filters=24, num_layers=2, num_rbf=8, max_z=MAX_Z, rbf_type="gauss",
                cutoff_upper=CUTOFF)


# ----------------------------------------------------------------------------------- inputs
def make_batch(dtype, seed=0, sizes=(9, 11, 7), spread=4.5, isolated=True):
    """Random molecules in a ``spread`` cube (cutoff 3: many pairs beyond it). With
    ``isolated`` the last atom of the first molecule sits far from everything (an atom with
    no neighbours: only its self loop)."""
    g = torch.Generator().manual_seed(seed)
    z, pos, batch = [], [], []
    for m, n in enumerate(sizes):
        z.append(torch.randint(1, MAX_Z, (n,), generator=g))
        p = torch.rand(n, 3, generator=g, dtype=torch.float64) * spread
        if isolated and m == 0:
            p[-1] += 20.0
        pos.append(p + 50.0 * m)  # molecules never see each other, even if batch were ignored
        batch.append(torch.full((n,), m, dtype=torch.long))
    return torch.cat(z), torch.cat(pos).to(dtype), torch.cat(batch)


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Randomise every parameter and buffer in place (keeping RBF widths valid)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("distance.box"):
                continue
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("betas", "coeff"):  # widths: positive resp. negative, scale by 0.7..1.3
                t.mul_(1.0 + 0.3 * torch.tanh(noise))
            elif leaf in ("means", "offset"):
                t.add_(0.05 * noise)
            else:
                t.add_(0.2 * noise)


def copy_state(ref: torch.nn.Module, ours: torch.nn.Module) -> None:
    sd = ref.state_dict()
    assert "distance.box" in sd
    del sd["distance.box"]
    ours.load_state_dict(sd, strict=True)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, dtype, what: str) -> None:
    assert ours.shape == ref.shape, what
    assert ours.dtype == ref.dtype, what
    scale = max(1.0, ref.abs().max().item())
    err = (ours - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: max |diff| {err:.3e} (scale {scale:.3g})"


def run_both(ref, ours, z, pos, batch, box, dtype, seed=123):
    """Forward both, compare outputs, then gradients of a random projection wrt pos."""
    outs = []
    for model in (ref, ours):
        p = pos.clone().requires_grad_(True)
        res = model(z, p, batch, box=box)
        x, vec = res[0], res[1]
        g = torch.Generator().manual_seed(seed)
        wx = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
        target = (x * wx).sum()
        if vec is not None:
            wv = torch.randn(vec.shape, generator=g, dtype=torch.float64).to(dtype)
            target = target + (vec * wv).sum()
        (grad,) = torch.autograd.grad(target, p)
        outs.append((x.detach(), None if vec is None else vec.detach(), grad))
    (x_r, v_r, g_r), (x_o, v_o, g_o) = outs
    assert torch.isfinite(g_o).all()
    assert_close(x_o, x_r, dtype, "x")
    if v_r is None:
        assert v_o is None
    else:
        assert_close(v_o, v_r, dtype, "vec")
        assert v_r.abs().max() > 0
    assert_close(g_o, g_r, dtype, "d/dpos")
    assert g_r.abs().max() > 0


# --------------------------------------------------------------------------- constructors
def build_et(dtype=torch.float32, seed=0, box_vecs=None, **kw):
    args = {**ET_SMALL, **kw}
    torch.manual_seed(seed)
    ref = torchmd_et.TorchMD_ET(**args, max_num_neighbors=64, box_vecs=box_vecs, dtype=dtype)
    perturb_(ref, seed + 1)
    ours = EquivariantTransformer(**args, dtype=dtype)
    copy_state(ref, ours)
    return ref, ours


def build_gn(dtype=torch.float32, seed=0, box_vecs=None, **kw):
    args = {**GN_SMALL, **kw}  # rbf_type always explicit: TorchMD_GN defaults to expnorm
    torch.manual_seed(seed)
    ref = torchmd_gn.TorchMD_GN(**args, max_num_neighbors=64, box_vecs=box_vecs, dtype=dtype)
    perturb_(ref, seed + 1)
    ours = GraphNetwork(**args, dtype=dtype)
    copy_state(ref, ours)
    return ref, ours


# ------------------------------------------------------------------------------------- ET
@pytest.mark.parametrize("neighbor_embedding", [True, False])
@pytest.mark.parametrize("vector_cutoff", [False, True])
@pytest.mark.parametrize("distance_influence", ["both", "keys", "values", "none"])
def test_et_distance_influence(distance_influence, vector_cutoff, neighbor_embedding):
    dtype = torch.float32
    ref, ours = build_et(dtype, distance_influence=distance_influence,
                         vector_cutoff=vector_cutoff, neighbor_embedding=neighbor_embedding)
    z, pos, batch = make_batch(dtype)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize(
    "activation,attn_activation",
    [("ssp", "tanh"), ("tanh", "sigmoid"), ("mish", "swish"), ("sigmoid", "ssp"),
     ("swish", "mish"), ("silu", "silu")],
)
def test_et_activations(activation, attn_activation):
    dtype = torch.float32
    ref, ours = build_et(dtype, seed=3, activation=activation, attn_activation=attn_activation)
    z, pos, batch = make_batch(dtype, seed=1)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("trainable_rbf", [True, False])
@pytest.mark.parametrize("rbf_type", ["expnorm", "gauss"])
def test_et_rbf(rbf_type, trainable_rbf):
    dtype = torch.float32
    ref, ours = build_et(dtype, seed=5, rbf_type=rbf_type, trainable_rbf=trainable_rbf)
    z, pos, batch = make_batch(dtype, seed=2)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("vector_cutoff", [False, True])
@pytest.mark.parametrize("rbf_type", ["expnorm", "gauss"])
def test_et_cutoff_lower(rbf_type, vector_cutoff):
    dtype = torch.float32
    ref, ours = build_et(dtype, seed=7, rbf_type=rbf_type, vector_cutoff=vector_cutoff,
                         cutoff_lower=0.75)
    z, pos, batch = make_batch(dtype, seed=3, spread=3.5)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(vector_cutoff=True, rbf_type="gauss", distance_influence="values"),
     dict(cutoff_lower=0.5, distance_influence="keys", neighbor_embedding=False,
          attn_activation="tanh")],
)
def test_et_float64(kw):
    dtype = torch.float64
    ref, ours = build_et(dtype, seed=11, **kw)
    z, pos, batch = make_batch(dtype, seed=4)
    run_both(ref, ours, z, pos, batch, None, dtype)


def test_et_single_molecule_more_heads():
    dtype = torch.float32
    ref, ours = build_et(dtype, seed=13, hidden_channels=32, num_heads=8, num_layers=3)
    z, pos, batch = make_batch(dtype, seed=5, sizes=(12,), isolated=False)
    run_both(ref, ours, z, pos, batch, None, dtype)


# ------------------------------------------------------------------------------------- GN
@pytest.mark.parametrize("neighbor_embedding", [True, False])
@pytest.mark.parametrize("aggr", ["add", "mean", "max"])
def test_gn_aggr(aggr, neighbor_embedding):
    dtype = torch.float32
    ref, ours = build_gn(dtype, aggr=aggr, neighbor_embedding=neighbor_embedding)
    z, pos, batch = make_batch(dtype)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("trainable_rbf", [True, False])
@pytest.mark.parametrize("rbf_type", ["expnorm", "gauss"])
def test_gn_rbf(rbf_type, trainable_rbf):
    dtype = torch.float32
    ref, ours = build_gn(dtype, seed=5, rbf_type=rbf_type, trainable_rbf=trainable_rbf)
    z, pos, batch = make_batch(dtype, seed=2)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("activation", ["ssp", "tanh", "mish", "sigmoid", "swish"])
def test_gn_activations(activation):
    dtype = torch.float32
    ref, ours = build_gn(dtype, seed=3, activation=activation, aggr="mean")
    z, pos, batch = make_batch(dtype, seed=1)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("aggr", ["add", "max"])
def test_gn_cutoff_lower(aggr):
    dtype = torch.float32
    ref, ours = build_gn(dtype, seed=7, cutoff_lower=0.75, aggr=aggr, num_filters=16)
    z, pos, batch = make_batch(dtype, seed=3, spread=3.5)
    run_both(ref, ours, z, pos, batch, None, dtype)


@pytest.mark.parametrize("aggr", ["add", "mean", "max"])
def test_gn_float64(aggr):
    dtype = torch.float64
    ref, ours = build_gn(dtype, seed=11, aggr=aggr, rbf_type="expnorm", cutoff_lower=0.5)
    z, pos, batch = make_batch(dtype, seed=4)
    run_both(ref, ours, z, pos, batch, None, dtype)


def test_gn_shared_filter_network():
    ours = GraphNetwork(**GN_SMALL)
    block = ours.interactions[0]
    assert block.mlp is block.conv.net
    sd = ours.state_dict()
    assert sd["interactions.0.mlp.0.weight"].data_ptr() == sd["interactions.0.conv.net.0.weight"].data_ptr()
    # ... and one set of parameters for the optimiser
    n_unique = sum(p.numel() for p in ours.parameters())
    ref = torchmd_gn.TorchMD_GN(**GN_SMALL)
    assert n_unique == sum(p.numel() for p in ref.parameters())


# ------------------------------------------------------- through TorchMD-Net's create_model
def _hparams(model, precision, **kw):
    hp = dict(model=model, precision=precision, embedding_dimension=16, num_layers=2, num_rbf=8,
              rbf_type="expnorm", trainable_rbf=False, activation="silu", cutoff_lower=0.0,
              cutoff_upper=CUTOFF, max_z=MAX_Z, max_num_neighbors=64, derivative=False,
              atom_filter=-1, prior_model=None, output_model="Scalar", reduce_op="add",
              neighbor_embedding=True, aggr="add", attn_activation="silu", num_heads=4,
              distance_influence="both", vector_cutoff=False)
    hp.update(kw)
    return hp


@pytest.mark.parametrize(
    "model,precision,kw",
    [("equivariant-transformer", 64, dict(vector_cutoff=True)),
     ("equivariant-transformer", 32, dict(rbf_type="gauss", trainable_rbf=True)),
     ("graph-network", 64, dict(aggr="mean", rbf_type="gauss")),
     ("graph-network", 32, dict(aggr="max", trainable_rbf=True))],
)
def test_checkpoint_layout_via_create_model(model, precision, kw):
    """``representation_model.*`` of a full TorchMD-Net model (the keys a checkpoint holds,
    after TorchMD_Net's ``.to(dtype)``) loads strictly and reproduces the representation."""
    from torchmdnet.models.model import create_model

    dtype = {32: torch.float32, 64: torch.float64}[precision]
    torch.manual_seed(31)
    full = create_model(_hparams(model, precision, **kw))
    ref = full.representation_model
    perturb_(ref, 37)
    prefix = "representation_model."
    sd = {k[len(prefix):]: v for k, v in full.state_dict().items()
          if k.startswith(prefix) and k != prefix + "distance.box"}
    hp = _hparams(model, precision, **kw)
    common = dict(hidden_channels=16, num_layers=2, num_rbf=8, rbf_type=hp["rbf_type"],
                  trainable_rbf=hp["trainable_rbf"], activation="silu", cutoff_upper=CUTOFF,
                  max_z=MAX_Z, neighbor_embedding=True, dtype=dtype)
    if model == "graph-network":
        ours = GraphNetwork(num_filters=16, aggr=hp["aggr"], **common)
    else:
        ours = EquivariantTransformer(num_heads=4, distance_influence="both",
                                      vector_cutoff=hp["vector_cutoff"], **common)
    ours.load_state_dict(sd, strict=True)
    z, pos, batch = make_batch(dtype, seed=6)
    run_both(ref, ours, z, pos, batch, None, dtype)


# ---------------------------------------------------------------------------- periodicity
def reference_min_image_list(pos, batch, cutoff_upper, cutoff_lower=0.0, box=None, loop=False):
    """TorchMD-Net's minimum-image rule (rounding along c, then b, then a) by brute force."""
    n = pos.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    keep = (batch[i] == batch[j]) & (i != j)
    i, j = i[keep], j[keep]
    with torch.no_grad():
        b = box if box.dim() == 3 else box.expand(int(batch.max()) + 1, 3, 3)
        b = b.to(pos.dtype)[batch[i]]
        d = pos[i] - pos[j]
        image = torch.zeros(i.shape[0], 3, dtype=pos.dtype)
        for axis in (2, 1, 0):
            k = torch.round(d[:, axis] / b[:, axis, axis])
            d = d - k[:, None] * b[:, axis]
            image[:, axis] = k
        dist = d.norm(dim=-1)
        keep = (dist >= cutoff_lower) & (dist < cutoff_upper)
        i, j, image, b = i[keep], j[keep], image[keep], b[keep]
    if loop:
        ar = torch.arange(n)
        i, j = torch.cat([i, ar]), torch.cat([j, ar])
        image = torch.cat([image, torch.zeros(n, 3, dtype=pos.dtype)])
        b = torch.cat([b, torch.zeros(n, 3, 3, dtype=pos.dtype)])
    edge_vec = pos[i] - pos[j] - torch.einsum("ek,ekl->el", image, b)
    norm = edge_vec.norm(dim=-1)
    return NeighborList(torch.stack([i, j]), edge_vec, norm, image.long())


def periodic_batch(dtype, per_system: bool):
    """Two small cells (triclinic, reduced form, all widths >= 2 * cutoff) of random atoms."""
    z, _, batch = make_batch(torch.float64, seed=9, sizes=(10, 8), isolated=False)
    box1 = torch.tensor([[6.5, 0.0, 0.0], [1.0, 6.2, 0.0], [-0.8, 1.2, 6.1]], dtype=torch.float64)
    box2 = torch.tensor([[6.0, 0.0, 0.0], [0.0, 7.0, 0.0], [0.0, 0.0, 6.3]], dtype=torch.float64)
    boxes = torch.stack([box1, box2]) if per_system else box1
    g = torch.Generator().manual_seed(17)
    frac = torch.rand(batch.shape[0], 3, generator=g, dtype=torch.float64)
    pos = torch.einsum("nk,nkl->nl", frac, (boxes if per_system else boxes[None].expand(2, 3, 3))[batch])
    pos = pos + torch.randn(pos.shape, generator=g, dtype=torch.float64) * 0.3  # some outside the cell
    return z, pos.to(dtype), batch, boxes.to(dtype)




@pytest.mark.parametrize("per_system", [False, True])
@pytest.mark.parametrize("model", ["et", "gn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_periodic_model_logic(model, dtype, per_system, monkeypatch):
    """Periodic parity with a reference minimum-image list patched in (tests the models)."""
    target = et_module if model == "et" else gn_module
    monkeypatch.setattr(target, "neighbor_list", reference_min_image_list)
    z, pos, batch, box = periodic_batch(dtype, per_system)
    if model == "et":
        ref, ours = build_et(dtype, seed=19, vector_cutoff=True)
    else:
        ref, ours = build_gn(dtype, seed=19, aggr="max")
    run_both(ref, ours, z, pos, batch, box, dtype)


@pytest.mark.parametrize("per_system", [False, True])
@pytest.mark.parametrize("model", ["et", "gn"])
def test_periodic_end_to_end(model, per_system):
    """Periodic parity through fastnnp's own neighbour list."""
    dtype = torch.float32
    z, pos, batch, box = periodic_batch(dtype, per_system)
    ref, ours = (build_et if model == "et" else build_gn)(dtype, seed=23)
    run_both(ref, ours, z, pos, batch, box, dtype)


def test_et_built_with_box_vecs(monkeypatch):
    """TorchMD-Net built with a fixed ``box_vecs`` (its ``distance.box`` buffer, dropped by the
    loader) matches ours given that box per call."""
    monkeypatch.setattr(et_module, "neighbor_list", reference_min_image_list)
    dtype = torch.float32
    z, pos, batch, box = periodic_batch(dtype, per_system=False)
    ref, ours = build_et(dtype, seed=29, box_vecs=box)
    run_both(ref, ours, z, pos, batch, box, dtype)


# ------------------------------------------------------------------------ argument checks
@pytest.mark.parametrize(
    "kw,match",
    [(dict(distance_influence="queries"), "distance_influence"),
     (dict(activation="relu"), "activation"),
     (dict(attn_activation="softmax"), "activation"),
     (dict(rbf_type="bessel"), "rbf_type"),
     (dict(hidden_channels=18, num_heads=4), "divisible"),
     (dict(cutoff_lower=3.0, cutoff_upper=3.0), "cutoff"),
     (dict(cutoff_upper=-1.0), "cutoff"),
     (dict(num_layers=-1), "num_layers"),
     (dict(hidden_channels=0), "hidden_channels"),
     (dict(dtype=torch.int32), "dtype")],
)
def test_et_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        EquivariantTransformer(**{**ET_SMALL, **kw})


@pytest.mark.parametrize(
    "kw,match",
    [(dict(aggr="min"), "aggr"),
     (dict(activation="gelu"), "activation"),
     (dict(rbf_type="bessel"), "rbf_type"),
     (dict(num_filters=0), "num_filters"),
     (dict(cutoff_lower=-0.5), "cutoff"),
     (dict(max_z=0), "max_z"),
     (dict(num_rbf=1, rbf_type="gauss"), "num_rbf")],
)
def test_gn_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        GraphNetwork(**{**GN_SMALL, **kw})


def test_outputs_shapes_and_none():
    z, pos, batch = make_batch(torch.float32)
    x, vec = EquivariantTransformer(**ET_SMALL)(z, pos, batch)
    assert x.shape == (z.shape[0], 16) and vec.shape == (z.shape[0], 3, 16)
    x, vec = GraphNetwork(**GN_SMALL)(z, pos, batch)
    assert x.shape == (z.shape[0], 16) and vec is None
