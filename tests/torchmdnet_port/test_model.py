"""Port of TorchMD-Net's ``tests/test_model.py``: forward calls with and without ``batch`` and
explicit ``q``/``s``, every output head, the reference outputs, gradients, growing inputs and
ensembles; TorchMD-Net's model with the same weights is the oracle. Not ported: TorchScript
(deprecated upstream, not offered), CUDA graphs (no GPU here), seeding (weight initialisation is
training-side; fastnnp loads trained weights)."""

import warnings
import zipfile

import pytest
import torch
from torchmdnet.models.model import load_model as tmn_load_model

import fastnnp
from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet
from tests.torchmdnet_port.oracle import (
    MODELS,
    assert_same_outputs,
    build_pair,
    example_batch,
    hparams,
    oracle_outputs,
)

DTYPES = {32: torch.float32, 64: torch.float64}
OUTPUT_MODELS = ("Scalar", "DipoleMoment", "ElectronicSpatialExtent")


@pytest.fixture(scope="module")
def scalar_pairs(tmp_path_factory):
    """Each model with a Scalar head and forces, in both precisions."""
    root = tmp_path_factory.mktemp("scalar")
    return {(name, precision): build_pair(root, hparams(name, precision=precision), seed=11 + precision)
            for name in MODELS for precision in DTYPES}


@pytest.mark.parametrize("precision", DTYPES)
@pytest.mark.parametrize("explicit_q_s", [True, False])
@pytest.mark.parametrize("use_batch", [True, False])
@pytest.mark.parametrize("model_name", MODELS)
def test_forward(scalar_pairs, model_name, use_batch, explicit_q_s, precision):
    pair = scalar_pairs[model_name, precision]
    inputs = example_batch(dtype=DTYPES[precision])
    if not use_batch:  # batch=None: one system of all atoms
        inputs["batch"] = None
    if explicit_q_s:
        inputs.update(q=None, s=None)
    ours = pair.model(**inputs)
    assert ours[0].shape == (2 if use_batch else 1, 1) and ours[1].shape == inputs["pos"].shape
    assert_same_outputs(ours, oracle_outputs(pair.oracle, inputs), DTYPES[precision])


def test_the_deprecated_transformer_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"model 'transformer' \(the deprecated TorchMD-T transformer\) is not supported"):
        build_pair(tmp_path, hparams("transformer"))


@pytest.mark.parametrize("precision", DTYPES)
@pytest.mark.parametrize("output_model", OUTPUT_MODELS)
@pytest.mark.parametrize("model_name", MODELS)
def test_forward_output(tmp_path, model_name, output_model, precision):
    """Upstream's ``test_forward_output_modules`` and ``test_forward_output`` (5 atoms, two
    systems, forces for scalar heads only), with TorchMD-Net's outputs in place of its pickled
    references; TorchMD-Net prefixes "Equivariant" for the equivariant models itself."""
    derivative = output_model == "Scalar"
    hp = hparams(model_name, precision=precision, output_model=output_model, derivative=derivative)
    pair = build_pair(tmp_path, hp, seed=5, derivative=derivative)
    inputs = example_batch(n_atoms=5, dtype=DTYPES[precision], seed=1)
    ours = pair.model(**inputs)
    assert ours[0].shape == (2, 1)
    assert_same_outputs(ours, oracle_outputs(pair.oracle, inputs), DTYPES[precision])


@pytest.mark.parametrize("model_name", MODELS)
def test_gradients(scalar_pairs, model_name):
    """Energy and forces are differentiable in positions, checked by finite differences
    (float64; default gradcheck tolerances, tighter than upstream's)."""
    model = scalar_pairs[model_name, 64].model
    inputs = example_batch(n_atoms=5, dtype=torch.float64, seed=2)
    pos = inputs["pos"].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: model(inputs["z"], p, inputs["batch"]), (pos,))


@pytest.mark.parametrize("model_name", MODELS)
def test_growing_inputs_and_random_batches(scalar_pairs, model_name):
    """Upstream's ``test_torchscript_dynamic_shapes`` without TorchScript: one model on inputs
    of 1..5 times the atoms with random system sizes (gradients: test_gradients). fastnnp
    refuses a ``batch`` with empty systems (TorchMD-Net gives them zero energy)."""
    pair = scalar_pairs[model_name, 64]
    base = example_batch(dtype=torch.float64, seed=3)
    g = torch.Generator().manual_seed(4)
    for rep in range(1, 6):
        z = base["z"].repeat_interleave(rep)
        pos = (base["pos"].repeat_interleave(rep, dim=0)
               + 0.3 * torch.randn(len(z), 3, generator=g, dtype=torch.float64))
        sizes = torch.multinomial(torch.ones(len(z) - 1), 3, generator=g).sort().values + 1
        batch = torch.zeros(len(z), dtype=torch.long)
        batch[sizes] = 1
        batch = batch.cumsum(0)  # 4 non-empty systems
        inputs = dict(z=z, pos=pos, batch=batch)
        assert_same_outputs(pair.model(**inputs), oracle_outputs(pair.oracle, inputs), torch.float64)
    gappy = batch.clone()
    gappy[gappy == 3] = 5
    with pytest.raises(ValueError, match="batch skips a system index: every system 0..n_systems-1 needs atoms"):
        pair.model(z, pos, gappy)


def test_ensemble(scalar_pairs, tmp_path):
    """Three copies of one checkpoint, as a list and as a ``.zip``: the mean is the single
    model's, the spread zero, the shapes those of the outputs; TorchMD-Net's ensemble agrees."""
    pair = scalar_pairs["tensornet", 64]
    inputs = example_batch(n_atoms=5, dtype=torch.float64)
    single = pair.model(**inputs)
    archive = tmp_path / "ensemble.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.write(pair.checkpoint, f"model_{i}.ckpt")
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = make_pure_torch(tmn_load_model(str(archive), return_std=True)).to(torch.float64)
    oracle_mean = oracle_outputs(oracle, inputs)
    for source in ([pair.checkpoint] * 3, archive):
        energy, forces, energy_std, forces_std = fastnnp.load_model(source, return_std=True)(**inputs)
        assert_same_outputs((energy, forces), single, torch.float64)
        assert_same_outputs((energy, forces), oracle_mean, torch.float64)
        assert energy_std.shape == energy.shape and forces_std.shape == forces.shape
        assert (energy_std == 0).all() and (forces_std == 0).all()
