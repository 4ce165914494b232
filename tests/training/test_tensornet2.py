"""TensorNet2 in the trainer: charged data, its config keys, and checkpoints that TorchMD-Net's
``load_model`` reads (strictly, the same state-dict keys its ``create_model`` builds) with the
predictions of ``fastnnp.load_model`` and of the trainer itself."""

import copy
import re
import warnings

import pytest

import fastnnp
from fastnnp.training.config import ConfigWarning, load_config
from fastnnp.checkpoint.format import COULOMB_BOX_KEY, LIGHTNING_PREFIX
from fastnnp.training.checkpoint_writer import load_checkpoint
from fastnnp.training.data import collate
from fastnnp.training.trainer import Trainer, predict
from tests.helpers.parity import assert_matches
from tests.helpers.training import TENSORNET2, TOTAL_CHARGES, charged_config, write_charged_molecules

pytest.importorskip("torchmdnet")

from lightning_utilities.core.rank_zero import rank_zero_only  # noqa: E402
from torchmdnet.models.model import create_model  # noqa: E402
from torchmdnet.models.model import load_model as torchmdnet_load_model  # noqa: E402

from fastnnp.bench.torchmdnet_pure import make_pure_torch  # noqa: E402
from tests.helpers.tensornet2 import pure_torch_tensornet2, tensornet2_outputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {
    "fp64-all-pairs-ZBL": {"precision": 64, "repulsion": True},
    "fp32-reaction-field": {"coulomb_cutoff": 4.0},
}


@pytest.fixture(scope="module")
def charged_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("charged") / "molecules.extxyz"
    write_charged_molecules(path)
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_checkpoint_loads_in_torchmdnet_with_equal_predictions(tmp_path, charged_data, variant):
    settings = VARIANTS[variant]
    trainer = Trainer(charged_config(tmp_path, charged_data, num_epochs=1, test_interval=-1, **settings),
                      progress=False)
    trainer.fit()
    path = str(tmp_path / "best.ckpt")
    checkpoint = load_checkpoint(path)
    assert checkpoint["global_step"] == 2
    hparams = checkpoint["hyper_parameters"]
    for key, value in {**TENSORNET2, **settings}.items():
        assert hparams[key] == value, key
    if getattr(rank_zero_only, "rank", None) is None:
        rank_zero_only.rank = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = create_model(copy.deepcopy(hparams)).state_dict()
    written = {re.sub(r"^model\.", "", k) for k in checkpoint["state_dict"]}
    assert written == set(built)  # TorchMD-Net's own keys: load_model need not fill any in
    assert (LIGHTNING_PREFIX + COULOMB_BOX_KEY in checkpoint["state_dict"]) == ("coulomb_cutoff" in settings)

    dtype = trainer.dtype
    frames = trainer.frames["train"] + trainer.frames["val"] + trainer.frames["test"]
    batch = collate(frames, dtype)
    assert sorted(batch.q.tolist()) == sorted(TOTAL_CHARGES)
    with pure_torch_tensornet2(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = make_pure_torch(torchmdnet_load_model(path, derivative=True))
    assert (theirs.representation_model.repulsion is not None) == ("repulsion" in settings)
    inputs = dict(z=batch.z, pos=batch.pos, batch=batch.batch, q=batch.q)
    energy, forces = tensornet2_outputs(theirs, inputs)
    assert_matches(*fastnnp.load_model(path)(batch.z, batch.pos, batch.batch, q=batch.q), energy, forces, dtype)
    # The trainer's own predictions used the charges: they are TorchMD-Net's with q, not without.
    ours = predict(trainer.eval_model(), batch, derivative=True, charge=True, create_graph=False)
    assert_matches(ours.y, ours.neg_dy, energy, forces, dtype)
    neutral, _ = tensornet2_outputs(theirs, dict(inputs, q=None))
    assert (neutral - energy).abs().min() > 1e-3


def test_charged_data_needs_charge_true(tmp_path, charged_data):
    with pytest.raises(ValueError, match=r"molecules.extxyz:0 has total charge 1, but charge is false, so "
                                         r"tensornet2 would be trained as if every system were neutral"):
        Trainer(charged_config(tmp_path, charged_data, charge=False), progress=False)


def test_tensornet2_keys_are_accepted_with_a_warning(tmp_path):
    overrides = ["--model", "tensornet2", "--q-dim", "2", "--q-weights", "1.0", "0.5", "--coulomb-cutoff", "4.5",
                 "--output-model", "ScalarPlusWeightedCoulomb", "--repulsion"]
    with pytest.warns(ConfigWarning) as caught:
        config = load_config(None, overrides)
    assert (config["q_dim"], config["q_weights"], config["coulomb_cutoff"], config["repulsion"]) == (2, [1.0, 0.5], 4.5, True)
    assert [str(w.message) for w in caught] == [
        "TorchMD-Net's create_model reads model='tensornet2', output_model='ScalarPlusWeightedCoulomb', "
        "coulomb_cutoff, q_dim, q_weights, repulsion, but torchmd-train does not offer them: torchmd-train cannot "
        "read this config (TorchMD-Net's load_model reads its checkpoints)"]
    assert "q_dim" not in load_config(None)  # present only when given


@pytest.mark.parametrize("overrides, message", [
    (["--model", "tensornet2", "--q-dim", "two"], "config key q_dim must be a number, got 'two'"),
    (["--model", "tensornet", "--repulsion"], "config key repulsion is read only with model tensornet2 or "
                                              "tensornetv2_alt or tensornet-nqe, but model is 'tensornet'"),
    (["--model", "tensornet2", "--q-dim", "2", "--q-weights", "1", "1"],
     "config key q_weights is read only with output_model ScalarPlusWeightedCoulomb, but output_model is 'Scalar'"),
    (["--model", "tensornet2", "--q-weights", "1", "1", "--output-model", "ScalarPlusWeightedCoulomb"],
     "output_model ScalarPlusWeightedCoulomb needs the charges of model tensornet2 with q_dim > 0 "
     "(model is 'tensornet2', q_dim None)"),
    (["--model", "tensornet", "--q-weights", "1", "1", "--output-model", "ScalarPlusWeightedCoulomb"],
     "output_model ScalarPlusWeightedCoulomb needs the charges of model tensornet2 with q_dim > 0 "
     "(model is 'tensornet', q_dim None)"),
])
def test_tensornet2_keys_that_would_not_be_honoured_are_errors(overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_config(None, overrides)
