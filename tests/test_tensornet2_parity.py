"""TensorNet2 checkpoints built with TorchMD-Net's ``create_model`` (every parameter and buffer
randomised), loaded with :func:`fastnnp.load_model`, against TorchMD-Net 3.1's pure-torch path:
energies and forces within :func:`parity.assert_matches` (fp32 bounds, 1e-9 relative in fp64),
the predicted charges, the legacy layout, the aliases and the refusals."""

import warnings

import pytest
import torch

import fastnnp
from fastnnp.models.factory import build_model

pytest.importorskip("torchmdnet")

from torchmdnet.models import model as tmn_model  # noqa: E402

from fastnnp.bench.torchmdnet_pure import make_pure_torch  # noqa: E402
from tests.helpers.tensornet2 import (  # noqa: E402
    TOTAL_CHARGES,
    build_tensornet2,
    pure_torch_tensornet2,
    tensornet2_charges,
    tensornet2_hparams,
    tensornet2_outputs,
)
from tests.helpers.variants import (  # noqa: E402
    DTYPES,
    ORTHORHOMBIC,
    check,
    fastnnp_outputs,
    molecules,
    periodic_cells,
    seed_of,
    write_checkpoint,
)
from tests.test_variant_checkpoints import assert_differs, to_legacy_layout  # noqa: E402

P64 = dict(precision=64)
RC = dict(coulomb_cutoff=4.5)


def case(id_, inputs="charged", **hp):
    return pytest.param(inputs, hp, id=id_)


CASES = [
    case("O3-charged"),
    case("O3-charged-fp64", **P64),
    case("SO3-charged", equivariance_invariance_group="SO(3)"),
    case("SO3-gauss-charged-fp64", equivariance_invariance_group="SO(3)", rbf_type="gauss", **P64),
    case("gauss-trainable_rbf", rbf_type="gauss", trainable_rbf=True),
    case("cutoff_lower-fp64", cutoff_lower=1.2, **P64),
    case("neutral", inputs="molecules"),
    case("output_mlp_num_layers-fp64", output_mlp_num_layers=1, **P64),
    case("coulomb_cutoff-open-fp64", **RC, **P64),
    case("pbc-coulomb_cutoff", inputs="periodic", **RC),
    case("pbc-coulomb_cutoff-fp64", inputs="periodic", **RC, **P64),
    case("pbc-ortho-coulomb_cutoff-SO3-fp64", inputs="periodic-ortho", equivariance_invariance_group="SO(3)",
         **RC, **P64),
    case("repulsion-fp64", repulsion=True, **P64),
    case("repulsion-pbc", inputs="periodic", repulsion=True, **RC),
    case("Scalar-head-fp64", output_model="Scalar", **P64),
]


def make_inputs(kind: str, dtype: torch.dtype) -> dict:
    if kind in ("charged", "molecules"):
        inputs = molecules(dtype)
        if kind == "charged":
            inputs["q"] = torch.tensor(TOTAL_CHARGES, dtype=dtype)
        return inputs
    box = ORTHORHOMBIC if kind == "periodic-ortho" else None
    inputs = periodic_cells(dtype) if box is None else periodic_cells(dtype, box=box)
    inputs["q"] = torch.tensor([1.0, -1.0], dtype=dtype)
    return inputs


def load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current-layout checkpoint loads silently
        return fastnnp.load_model(path, **kwargs)


@pytest.mark.parametrize("inputs_kind, overrides", CASES)
def test_tensornet2_checkpoint_matches_torchmdnet(request, tmp_path, inputs_kind, overrides):
    hp = tensornet2_hparams(**overrides)
    dtype = DTYPES[hp["precision"]]
    reference = build_tensornet2(hp, seed=seed_of(request))
    path = write_checkpoint(tmp_path / "model.ckpt", reference.state_dict(), hp)
    inputs = make_inputs(inputs_kind, dtype)
    ref = tensornet2_outputs(reference, inputs)
    ours_model = load_quietly(path)
    assert type(ours_model.representation_model).__name__ == "TensorNet2"
    check(fastnnp_outputs(ours_model, inputs), ref, dtype)

    # what the case is about changes TorchMD-Net's numbers (else it proves nothing)
    if inputs.get("q") is not None:
        assert_differs(ref, tensornet2_outputs(reference, dict(inputs, q=None)), dtype, "q")
    if inputs.get("box") is not None:
        assert_differs(ref, tensornet2_outputs(reference, dict(inputs, box=None)), dtype, "box")
    if hp.get("repulsion"):
        reference.representation_model.repulsion = None
        assert_differs(ref, tensornet2_outputs(reference, inputs), dtype, "repulsion")


@pytest.mark.parametrize("precision, group", [(32, "O(3)"), (64, "SO(3)")])
def test_predicted_charges_match_and_sum_to_total_charge(request, tmp_path, precision, group):
    """Every prediction's channels: TorchMD-Net's values, and per system the total charge (up
    to the equilibration's relative 1e-6 / sum f^2)."""
    hp = tensornet2_hparams(precision=precision, equivariance_invariance_group=group)
    dtype = DTYPES[precision]
    reference = build_tensornet2(hp, seed=seed_of(request))
    path = write_checkpoint(tmp_path / "model.ckpt", reference.state_dict(), hp)
    inputs = make_inputs("charged", dtype)
    model = load_quietly(path)
    F = hp["embedding_dimension"]
    x, _ = model.representation_model(inputs["z"], inputs["pos"], inputs["batch"], q=inputs["q"])
    charges = x[:, F:].detach()
    assert charges.shape == (len(inputs["z"]), (hp["num_layers"] + 1) * hp["q_dim"])
    expected = tensornet2_charges(reference, inputs)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(charges, expected, **tol)
    assert charges.std() > 0.05, "charges barely vary: weak test"

    # the equilibration: sums = Q - eps / (S + eps) (Q - raw sums), S the sum of the squared weights
    raw = []
    predictors = [model.representation_model.charge_predict_0, *model.representation_model.charge_predicts]
    hooks = [p.q_mlp.register_forward_hook(lambda m, args, out: raw.append(out.detach())) for p in predictors]
    model.representation_model(inputs["z"], inputs["pos"], inputs["batch"], q=inputs["q"])
    for hook in hooks:
        hook.remove()
    q_dim, batch = hp["q_dim"], inputs["batch"]
    raw_charges = torch.cat([r[:, :q_dim] for r in raw], 1)
    squares = torch.cat([r[:, q_dim:] ** 2 for r in raw], 1)

    def per_system(values):
        return torch.zeros(3, values.shape[1], dtype=dtype).index_add(0, batch, values)

    sums, raw_sums, S = per_system(charges), per_system(raw_charges), per_system(squares)
    Q = inputs["q"][:, None]
    missing = 1e-6 / (S + 1e-6) * (Q - raw_sums)
    tol = dict(atol=1e-5, rtol=0) if dtype == torch.float32 else dict(atol=1e-12, rtol=0)
    torch.testing.assert_close(sums, Q - missing, **tol)
    assert (Q - raw_sums).abs().min() > 0.1, "raw charges already sum to Q: weak test"
    assert ((sums - Q).abs() <= 1e-6 / S * (Q - raw_sums).abs() + tol["atol"]).all()


def tmn_load_tensornet2(path, **kwargs):
    """``torchmdnet.models.model.load_model`` on the pure-torch TensorNet2 path, eval mode."""
    with pure_torch_tensornet2(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tmn_model.load_model(str(path), **kwargs)
    return make_pure_torch(model).eval()


@pytest.mark.parametrize("precision", [32, 64])
def test_legacy_layout_and_aliases(request, tmp_path, precision):
    """AceFF-style checkpoints: the model named ``tensornetv2_alt`` / ``tensornet-nqe``, the
    embedding's linear in the legacy [N, F, 3, 3] row order, marked by ``check_errors``."""
    hp = tensornet2_hparams(precision=precision)
    dtype = DTYPES[precision]
    reference = build_tensornet2(hp, seed=seed_of(request))
    inputs = make_inputs("charged", dtype)
    ref = tensornet2_outputs(reference, inputs)
    legacy = to_legacy_layout(reference.state_dict(), 0)  # TensorNet2: the embedding only

    for alias in ("tensornetv2_alt", "tensornet-nqe"):
        marked = write_checkpoint(tmp_path / f"{alias}.ckpt", legacy, dict(hp, model=alias, check_errors=True))
        check(tensornet2_outputs(tmn_load_tensornet2(marked), inputs), ref, dtype)  # the inverse is right
        with pytest.warns(UserWarning, match="legacy TensorNet weight layout.*check_errors"):
            ours = fastnnp.load_model(marked)
        check(fastnnp_outputs(ours, inputs), ref, dtype)

    unmarked = write_checkpoint(tmp_path / "unmarked.ckpt", legacy, dict(hp, model="tensornetv2_alt"))
    check(fastnnp_outputs(load_quietly(unmarked, layout="legacy"), inputs), ref, dtype)
    assert_differs(fastnnp_outputs(load_quietly(unmarked), inputs), ref, dtype, "the layout")


def test_refusals(tmp_path):
    """All-to-all Coulomb with a box, a cell too small for the reaction field's cutoff, and
    q_weights that do not fit the predictions."""
    hp = tensornet2_hparams()
    model = build_tensornet2(hp, seed=1)
    path = write_checkpoint(tmp_path / "open.ckpt", model.state_dict(), hp)
    cell = make_inputs("periodic", torch.float32)
    with pytest.raises(ValueError, match="without coulomb_cutoff .* cannot be periodic"):
        fastnnp.load_model(path)(**cell)

    hp = tensornet2_hparams(coulomb_cutoff=4.8)  # 2 * 4.8 > the cell's 9.4 Angstrom width
    model = build_tensornet2(hp, seed=2)
    path = write_checkpoint(tmp_path / "rf.ckpt", model.state_dict(), hp)
    with pytest.raises(ValueError, match=r"perpendicular width of the cell >= 2 \* coulomb_cutoff = 9.6"):
        fastnnp.load_model(path)(**cell)

    with pytest.raises(ValueError, match="q_weights needs one entry per charge prediction"):
        build_model(tensornet2_hparams(q_weights=[1.0, 1.0]))
