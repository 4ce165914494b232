"""End-to-end parity on variant checkpoints built with TorchMD-Net's own ``create_model``.

Every case starts from the shipped ``tests/data/tensornet/hparams.yaml`` (a real
``torchmd-train`` hyper-parameter dict), modifies it (architecture, RBF, activation,
precision, priors, output head, box ...), builds the model with
``torchmdnet.models.model.create_model``, randomises every parameter and buffer (seeded;
biases, RBF parameters, ``mean``/``std``, Atomref tables all non-trivial), writes a
Lightning-like ``.ckpt``, loads it with :func:`fastnnp.load_model` and compares energies and
forces with what the TorchMD-Net model itself computes (pure-torch TensorNet path), within the
acceptance tolerances of :func:`parity.assert_matches`.
"""

import re
import warnings
import zipfile

import numpy as np
import pytest
import torch

import fastnnp

pytest.importorskip("torchmdnet")

from torchmdnet import utils as tmn_utils  # noqa: E402
from torchmdnet.models import model as tmn_model  # noqa: E402
from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet  # noqa: E402

from tests.helpers.variants import (  # noqa: E402
    DTYPES,
    ORTHORHOMBIC,
    TRICLINIC,
    build_reference,
    check,
    fastnnp_outputs,
    make_hparams,
    molecules,
    own_buffers_,
    partial_charges,
    periodic_cells,
    priors_hparams,
    reference_outputs,
    seed_of,
    write_checkpoint,
)
# -------------------------------------------------------------------------- the matrix
def case(id_, model="tn", inputs="molecules", **hp):
    return pytest.param(model, inputs, hp, id=id_)


P64 = dict(precision=64)
CASES = [
    # TensorNet: group, RBF, cutoffs, activations, precision, charge, boxes
    # (cutoff_lower 1.2 drops the C-H and O-H bonds of the molecules)
    case("tn-O3"),
    case("tn-SO3", equivariance_invariance_group="SO(3)"),
    case("tn-gauss", rbf_type="gauss"),
    case("tn-trainable_rbf", trainable_rbf=True),
    case("tn-gauss-trainable_rbf-SO3", rbf_type="gauss", trainable_rbf=True,
         equivariance_invariance_group="SO(3)"),
    case("tn-cutoff_lower", cutoff_lower=1.2),
    case("tn-cutoff_lower-gauss", cutoff_lower=1.2, rbf_type="gauss", cutoff_upper=5.0),
    case("tn-ssp", activation="ssp"),
    case("tn-tanh", activation="tanh"),
    case("tn-mish", activation="mish", equivariance_invariance_group="SO(3)"),
    case("tn-fp64", **P64),
    case("tn-SO3-gauss-fp64", equivariance_invariance_group="SO(3)", rbf_type="gauss", **P64),
    case("tn-charge", inputs="charged"),
    case("tn-SO3-charge-fp64", inputs="charged", equivariance_invariance_group="SO(3)", **P64),
    case("tn-pbc-triclinic", inputs="periodic"),
    case("tn-pbc-orthorhombic-fp64", inputs="periodic-ortho", **P64),
    case("tn-box_vecs", inputs="box_vecs", box_vecs=TRICLINIC),
    case("tn-box_vecs-fp64", inputs="box_vecs", box_vecs=TRICLINIC, **P64),
    case("tn-reduce_mean", reduce_op="mean"),
    case("tn-output_mlp_num_layers-ignored", output_mlp_num_layers=2),  # TorchMD-Net bug #343
    # priors
    case("tn-Atomref", **priors_hparams("Atomref")),
    case("tn-ZBL", **priors_hparams("ZBL")),
    case("tn-D2", **priors_hparams("D2")),
    case("tn-Coulomb", inputs="partial_charges", **priors_hparams("Coulomb")),
    case("tn-all_priors-fp64", inputs="partial_charges",
         **priors_hparams("Atomref", "ZBL", "D2", "Coulomb"), **P64),
    case("tn-Atomref-reduce_mean", reduce_op="mean", **priors_hparams("Atomref")),
    case("tn-ZBL-pbc", inputs="periodic", **priors_hparams("ZBL")),
    case("tn-D2-box_vecs", inputs="box_vecs", box_vecs=TRICLINIC, **priors_hparams("D2")),
    case("tn-ZBL-box_vecs", inputs="box_vecs", box_vecs=TRICLINIC, **priors_hparams("ZBL")),
    # output heads with TensorNet / GN
    case("tn-DipoleMoment", output_model="DipoleMoment"),
    case("tn-DipoleMoment-mean-fp64", output_model="DipoleMoment", reduce_op="mean", **P64),
    case("tn-ElectronicSpatialExtent", output_model="ElectronicSpatialExtent"),
    case("tn-ElectronicSpatialExtent-mean", output_model="ElectronicSpatialExtent",
         reduce_op="mean"),
    case("tn-DipoleMoment-prior-dropped", output_model="DipoleMoment",
         **priors_hparams("Atomref")),
    case("gn-DipoleMoment", "gn", output_model="DipoleMoment"),
    case("gn-ElectronicSpatialExtent-mean", "gn", output_model="ElectronicSpatialExtent",
         reduce_op="mean"),
    # Equivariant Transformer
    case("et-both-neighbor_embedding", "et", neighbor_embedding=True),
    case("et-keys-vector_cutoff", "et", distance_influence="keys", vector_cutoff=True),
    case("et-values-gauss-cutoff_lower", "et", distance_influence="values", rbf_type="gauss",
         cutoff_lower=1.2),
    case("et-ssp-tanh-trainable_rbf", "et", activation="ssp", attn_activation="tanh",
         trainable_rbf=True, neighbor_embedding=True),
    # distance_influence none: |E| ~ 100s whatever the weights, float32 rounding near tolerance
    case("et-none-mish-fp64", "et", distance_influence="none", activation="mish",
         attn_activation="ssp", **P64),
    case("et-fp64-vector_cutoff", "et", vector_cutoff=True, neighbor_embedding=True, **P64),
    case("et-pbc", "et", inputs="periodic", vector_cutoff=True),
    case("et-box_vecs", "et", inputs="box_vecs", box_vecs=ORTHORHOMBIC),
    case("et-EquivariantScalar-mean", "et", reduce_op="mean"),
    case("et-EquivariantDipoleMoment", "et", output_model="DipoleMoment"),
    case("et-EquivariantDipoleMoment-mean-fp64", "et", output_model="DipoleMoment",
         reduce_op="mean", **P64),
    case("et-EquivariantVectorOutput", "et", output_model="VectorOutput"),
    case("et-EquivariantVectorOutput-mean-fp64", "et", output_model="VectorOutput",
         reduce_op="mean", **P64),
    case("et-EquivariantElectronicSpatialExtent", "et", output_model="ElectronicSpatialExtent"),
    case("et-Atomref-ZBL-D2", "et", **priors_hparams("Atomref", "ZBL", "D2")),
    case("et-Coulomb-fp64", "et", inputs="partial_charges", **priors_hparams("Coulomb"), **P64),
    # Graph Network
    case("gn-add", "gn", aggr="add"),
    case("gn-mean-neighbor_embedding", "gn", aggr="mean", neighbor_embedding=True),
    case("gn-max-ssp-gauss", "gn", aggr="max", activation="ssp", rbf_type="gauss"),
    case("gn-mean-fp64-cutoff_lower", "gn", aggr="mean", cutoff_lower=1.2, **P64),
    case("gn-pbc-max", "gn", inputs="periodic", aggr="max"),
    case("gn-reduce_mean-Atomref-ZBL", "gn", reduce_op="mean", **priors_hparams("Atomref", "ZBL")),
]


def make_inputs(kind: str, hp: dict) -> dict:
    dtype = DTYPES[hp["precision"]]
    if kind in ("molecules", "charged", "partial_charges"):
        inputs = molecules(dtype)
        if kind == "charged":  # total charge per system
            inputs["q"] = torch.tensor([1.0, -2.0, 0.5], dtype=dtype)
        if kind == "partial_charges":  # per atom, for the Coulomb prior
            inputs["extra_args"] = {"partial_charges": partial_charges(len(inputs["z"]), dtype)}
        return inputs
    if kind == "periodic":
        return periodic_cells(dtype)
    if kind == "periodic-ortho":
        return periodic_cells(dtype, box=ORTHORHOMBIC)
    if kind == "box_vecs":  # the cell is in the checkpoint: no box at call time
        return dict(periodic_cells(dtype, box=hp["box_vecs"]), box=None)
    raise ValueError(kind)


def assert_differs(outputs, baseline, dtype, what: str) -> None:
    """``outputs`` differ from ``baseline`` by > 20x the tolerance of ``assert_matches``:
    ``what`` matters here, so the comparison exercised it."""
    (y, f), (y0, f0) = outputs, baseline
    rel = 1e-9 if dtype == torch.float64 else 1e-5
    e_tol = rel * max(1.0, y0.abs().max().item())
    f_tol = (rel if dtype == torch.float64 else 1e-4) * max(1.0, f0.abs().max().item())
    assert ((y - y0).abs().max() > 20 * e_tol or (f - f0).abs().max() > 20 * f_tol), \
        f"{what} changes nothing measurable: weak test"


@pytest.mark.parametrize("model_name, inputs_kind, overrides", CASES)
def test_variant_checkpoint_matches_torchmdnet(request, tmp_path, model_name, inputs_kind,
                                               overrides):
    hp = make_hparams(model_name, **overrides)
    dtype = DTYPES[hp["precision"]]
    reference = build_reference(hp, seed=seed_of(request))
    path = write_checkpoint(tmp_path / "model.ckpt", reference.state_dict(), hp)
    inputs = make_inputs(inputs_kind, hp)
    ref = reference_outputs(reference, inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current-layout checkpoint loads silently
        ours_model = fastnnp.load_model(path)
    ours = fastnnp_outputs(ours_model, inputs)
    check(ours, ref, dtype)

    # each feature under test changes TorchMD-Net's numbers (else the case proves nothing)
    priors = list(reference.prior_model or ())
    for i, prior in enumerate(priors):
        reference.prior_model = torch.nn.ModuleList(priors[:i] + priors[i + 1:])
        assert_differs(ref, reference_outputs(reference, inputs), dtype, type(prior).__name__)
        reference.prior_model = torch.nn.ModuleList(priors)
    if inputs.get("q") is not None:
        assert_differs(ref, reference_outputs(reference, dict(inputs, q=None)), dtype, "q")
    if inputs.get("box") is not None:
        assert_differs(ref, reference_outputs(reference, dict(inputs, box=None)), dtype, "box")
    if hp.get("box_vecs") is not None:
        assert ours_model.default_box is not None
        ours_model.default_box = None
        assert_differs(ref, fastnnp_outputs(ours_model, inputs), dtype, "box_vecs")


# Float32 variants the Triton kernels serve (kernel activations), one per feature they cover.
TRITON_CASES = [c for c in CASES if c.id in (
    "et-keys-vector_cutoff", "et-values-gauss-cutoff_lower", "et-ssp-tanh-trainable_rbf", "et-pbc",
    "et-EquivariantDipoleMoment", "gn-add", "gn-mean-neighbor_embedding", "gn-max-ssp-gauss", "gn-pbc-max",
    "gn-DipoleMoment",
)]


@pytest.mark.parametrize("model_name, inputs_kind, overrides", TRITON_CASES)
def test_variant_checkpoint_on_triton_matches_torchmdnet(request, tmp_path, model_name, inputs_kind, overrides):
    """ET and GN variants on the Triton kernels (CPU interpreter) against TorchMD-Net's own
    numbers, with the exact filters (the radial MLP kernels) and with radial tables."""
    hp = make_hparams(model_name, **overrides)
    reference = build_reference(hp, seed=seed_of(request))
    path = write_checkpoint(tmp_path / "model.ckpt", reference.state_dict(), hp)
    inputs = make_inputs(inputs_kind, hp)
    ref = reference_outputs(reference, inputs)
    for radial in ("exact", "auto"):
        model = fastnnp.load_model(path, backend="triton", radial=radial)
        assert type(model.representation_model).__name__.startswith("Triton")
        check(fastnnp_outputs(model, inputs), ref, torch.float32)


# ------------------------------------------------------------------ delta learning (Atomref)
def tmn_load(path, **kwargs) -> torch.nn.Module:
    """``torchmdnet.models.model.load_model`` on the pure-torch TensorNet path, eval mode.

    Its strict ``load_state_dict`` copies a checkpoint's ``atomic_mass`` into a buffer that
    may alias TorchMD-Net's global mass table (see :func:`own_buffers_`); the table is
    restored afterwards, the model keeps the checkpoint's values."""
    masses = tmn_utils.atomic_masses.copy()
    try:
        with pure_torch_tensornet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tmn_model.load_model(
                path if isinstance(path, (list, tuple)) else str(path), **kwargs)
        own_buffers_(model)
    finally:
        np.copyto(tmn_utils.atomic_masses, masses)
    return make_pure_torch(model).eval()


@pytest.mark.parametrize("model_name, precision", [("tn", 32), ("et", 64)])
def test_delta_learning_remove_ref_energy(request, tmp_path, model_name, precision):
    """Trained with ``remove_ref_energy``: the last prior is a disabled Atomref. Loaded as is
    it stays off; the override ``remove_ref_energy=False`` turns it on (total energies)."""
    hp = make_hparams(model_name, precision=precision, **priors_hparams("ZBL", delta=True))
    dtype = DTYPES[precision]
    reference = build_reference(hp, seed=seed_of(request))
    assert not reference.prior_model[-1].enable
    path = write_checkpoint(tmp_path / "delta.ckpt", reference.state_dict(), hp)
    inputs = molecules(dtype)

    relative = reference_outputs(tmn_load(path), inputs)
    check(relative, reference_outputs(reference, inputs), dtype)  # TorchMD-Net's own round trip
    total = reference_outputs(tmn_load(path, remove_ref_energy=False), inputs)
    assert_differs(total, relative, dtype, "remove_ref_energy=False")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(fastnnp_outputs(fastnnp.load_model(path), inputs), relative, dtype)
        check(fastnnp_outputs(fastnnp.load_model(path, remove_ref_energy=True), inputs),
              relative, dtype)
        check(fastnnp_outputs(fastnnp.load_model(path, remove_ref_energy=False), inputs),
              total, dtype)


# ------------------------------------------------------------------------ checkpoint quirks
def tensornet_linears(num_layers: int) -> list[str]:
    """The linears whose output rows TorchMD-Net 3.0 reordered ([N,F,3,3] -> [N,3,3,F])."""
    return (["representation_model.tensor_embedding.linears_scalar.1"]
            + [f"representation_model.layers.{i}.linears_scalar.2" for i in range(num_layers)])


def to_legacy_layout(state: dict, num_layers: int) -> dict:
    """Inverse of TorchMD-Net's ``remix_linear``: row ``k*F + f`` (current) -> ``f*3 + k``."""
    state = dict(state)
    for prefix in tensornet_linears(num_layers):
        weight, bias = state[prefix + ".weight"], state[prefix + ".bias"]
        rows, cols = weight.shape
        state[prefix + ".weight"] = weight.reshape(3, rows // 3, cols).transpose(0, 1) \
            .reshape(rows, cols).clone()
        state[prefix + ".bias"] = bias.reshape(3, rows // 3).transpose(0, 1).reshape(rows).clone()
    return state


def without_box_buffers(state: dict) -> dict:
    """What checkpoints older than TorchMD-Net 2.5 hold: no neighbour-list ``box`` buffers."""
    kept = {k: v for k, v in state.items() if not re.search(r"(^|\.)distances?\.box$", k)}
    assert len(kept) < len(state)
    return kept


@pytest.mark.parametrize("group, precision", [("O(3)", 32), ("SO(3)", 64)])
def test_legacy_tensornet_layout(request, tmp_path, group, precision):
    hp = make_hparams("tn", precision=precision, equivariance_invariance_group=group,
                      **priors_hparams("Atomref"))
    dtype = DTYPES[precision]
    reference = build_reference(hp, seed=seed_of(request))
    legacy_state = to_legacy_layout(reference.state_dict(), hp["num_layers"])
    inputs = molecules(dtype)
    ref = reference_outputs(reference, inputs)

    # TorchMD-Net < 3.0 (2024-01 .. 2.6.1): marked by ``check_errors`` in the hparams
    marked = write_checkpoint(tmp_path / "marked.ckpt", legacy_state,
                              dict(hp, check_errors=True))
    check(reference_outputs(tmn_load(marked), inputs), ref, dtype)  # the inverse is right
    with pytest.warns(UserWarning, match="legacy TensorNet weight layout.*check_errors"):
        ours = fastnnp.load_model(marked)
    check(fastnnp_outputs(ours, inputs), ref, dtype)

    # no marker (v2.6.2 / before 2024-01): only an explicit layout gets it right
    unmarked = write_checkpoint(tmp_path / "unmarked.ckpt", legacy_state, hp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legacy = fastnnp.load_model(unmarked, layout="legacy")
        wrong = fastnnp.load_model(unmarked)
    check(fastnnp_outputs(legacy, inputs), ref, dtype)
    assert_differs(fastnnp_outputs(wrong, inputs), ref, dtype, "the layout")
    check(reference_outputs(tmn_load(unmarked, compatibility_load=True), inputs), ref, dtype)


OLD_KEYS = [  # pattern of current keys -> their names before TorchMD-Net PR #314
    (r"^output_model\.output_network\.layers\.(\d+)\.", r"output_model.output_network.\1."),
    (r"^output_model\.output_network\.(\d+)\.update_net\.layers\.(\d+)\.",
     r"output_model.output_network.\1.update_net.\2."),
]


def to_old_output_keys(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in OLD_KEYS:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    assert renamed.keys() != state.keys()
    assert not any(".layers." in k for k in renamed if k.startswith("output_model."))
    return renamed


@pytest.mark.parametrize("model_name, overrides", [
    ("tn", dict()),
    ("gn", dict(output_model="DipoleMoment", precision=64)),
    ("et", dict()),
    ("et", dict(output_model="VectorOutput", precision=64)),
], ids=["tn-Scalar", "gn-DipoleMoment-fp64", "et-EquivariantScalar",
        "et-EquivariantVectorOutput-fp64"])
def test_output_keys_before_pr314(request, tmp_path, model_name, overrides):
    hp = make_hparams(model_name, **overrides)
    dtype = DTYPES[hp["precision"]]
    reference = build_reference(hp, seed=seed_of(request))
    path = write_checkpoint(tmp_path / "old_keys.ckpt", to_old_output_keys(reference.state_dict()),
                            hp)
    inputs = molecules(dtype)
    ref = reference_outputs(reference, inputs)
    check(reference_outputs(tmn_load(path), inputs), ref, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = fastnnp.load_model(path)
    check(fastnnp_outputs(ours, inputs), ref, dtype)


@pytest.mark.parametrize("model_name, precision, prior_names", [
    ("et", 32, ("ZBL", "D2")),
    ("gn", 64, ("Atomref", "ZBL", "Coulomb")),
])
def test_checkpoint_without_box_buffers(request, tmp_path, model_name, precision, prior_names):
    """Pre-2.5 checkpoints: no ``representation_model.distance.box`` nor prior
    ``distance(s).box`` (TorchMD-Net's own ``load_model`` refuses the prior ones)."""
    hp = make_hparams(model_name, precision=precision, **priors_hparams(*prior_names))
    dtype = DTYPES[precision]
    reference = build_reference(hp, seed=seed_of(request))
    state = without_box_buffers(reference.state_dict())
    assert len(reference.state_dict()) - len(state) == 1 + len(
        [n for n in prior_names if n != "Atomref"])
    path = write_checkpoint(tmp_path / "old.ckpt", state, hp)
    inputs = molecules(dtype)
    if "Coulomb" in prior_names:  # extra_args that nothing reads are an error
        inputs["extra_args"] = {"partial_charges": partial_charges(len(inputs["z"]), dtype)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = fastnnp.load_model(path)
    check(fastnnp_outputs(ours, inputs), reference_outputs(reference, inputs), dtype)


@pytest.mark.parametrize("precision", [32, 64])
def test_tensornet_without_box_buffer(request, tmp_path, precision):
    """A pre-2.5 TensorNet checkpoint: no box buffers and the legacy layout (detected from
    the missing buffer, with a warning); the current layout without the buffer needs
    ``layout="current"``."""
    hp = make_hparams("tn", precision=precision, **priors_hparams("ZBL", "D2"))
    dtype = DTYPES[precision]
    reference = build_reference(hp, seed=seed_of(request))
    inputs = molecules(dtype)
    ref = reference_outputs(reference, inputs)
    state = without_box_buffers(reference.state_dict())
    old = write_checkpoint(tmp_path / "old.ckpt", to_legacy_layout(state, hp["num_layers"]), hp)
    with pytest.warns(UserWarning, match="legacy TensorNet weight layout.*box buffer"):
        ours = fastnnp.load_model(old)
    check(fastnnp_outputs(ours, inputs), ref, dtype)

    current = write_checkpoint(tmp_path / "current.ckpt", state, hp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = fastnnp.load_model(current, layout="current")
    check(fastnnp_outputs(ours, inputs), ref, dtype)


# --------------------------------------------------------------------------------- ensembles
@pytest.mark.parametrize("precision", [32, 64])
def test_ensemble_of_variant_checkpoints(request, tmp_path, precision):
    """A list of checkpoints and a .zip of them: mean and (sample) std over the members equal
    those of the individual TorchMD-Net models, and TorchMD-Net's own ``Ensemble``."""
    seed = seed_of(request)
    members = [
        make_hparams("tn", precision=precision, equivariance_invariance_group="SO(3)",
                     **priors_hparams("Atomref", "ZBL")),
        make_hparams("et", precision=precision, vector_cutoff=True, **priors_hparams("Atomref")),
    ]
    dtype = DTYPES[precision]
    inputs = molecules(dtype)
    paths, outputs = [], []
    for i, hp in enumerate(members):
        reference = build_reference(hp, seed=seed + i)
        paths.append(write_checkpoint(tmp_path / f"member{i}.ckpt", reference.state_dict(), hp))
        outputs.append(reference_outputs(reference, inputs))
    ys = torch.stack([y for y, _ in outputs])
    fs = torch.stack([f for _, f in outputs])
    mean = (ys.mean(0), fs.mean(0))
    std = (ys.std(0), fs.std(0))
    assert_differs(std, (torch.zeros_like(std[0]), torch.zeros_like(std[1])), dtype,
                   "the spread")

    archive = tmp_path / "ensemble.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths:
            zf.write(path, arcname=path.name)

    theirs = tmn_load([str(p) for p in paths], return_std=True)
    their_out = reference_outputs(theirs, inputs)
    check(their_out, mean, dtype)
    for source in (paths, str(archive)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ensemble = fastnnp.load_model(source)
            with_std = fastnnp.load_model(source, return_std=True)
        check(fastnnp_outputs(ensemble, inputs), mean, dtype)
        out = with_std(**inputs)
        assert len(out) == 4
        check((out[0].detach(), out[1].detach()), mean, dtype)
        check((out[2].detach(), out[3].detach()), std, dtype)
