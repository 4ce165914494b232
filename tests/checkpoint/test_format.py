"""TorchMD-Net's checkpoint format both ways: a fastnnp model state written as a Lightning state dict
and read back is unchanged, and the written keys are those TorchMD-Net's own models hold."""

import copy
import warnings

import pytest
import torch

from fastnnp.checkpoint import lightning_state_from_model, model_state_from_lightning
from fastnnp.models.factory import build_model
from tests.helpers import DATA

ANGSTROM, EV = 1e-10, 1.602176634e-19
KCAL_PER_MOL = 4184.0 / 6.02214076e23  # J
PRIORS = {
    "prior_model": ["ZBL", "D2"],
    "prior_args": [
        {"cutoff_distance": 3.0, "max_num_neighbors": 32, "atomic_number": list(range(32)),
         "distance_scale": ANGSTROM, "energy_scale": EV},
        {"cutoff_distance": 6.0, "max_num_neighbors": 32, "atomic_number": list(range(32)),
         "distance_scale": ANGSTROM, "energy_scale": KCAL_PER_MOL},
    ],
}
BOX = [[9.6, 0.0, 0.0], [1.5, 9.4, 0.0], [-1.0, 2.0, 9.8]]


def assert_same_state(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():  # exactly equal, dtype too (D2's tables hold NaN)
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def fastnnp_state(hparams: dict, weights: dict | None = None) -> dict:
    """The state dict of the fastnnp model ``hparams`` describe (with ``weights`` loaded strictly)."""
    model = build_model(hparams, None if weights is None else list(weights))
    if weights is not None:
        model.load_state_dict(weights)
    return model.state_dict()


@pytest.mark.parametrize("architecture", ["tensornet", "et", "gn"])
def test_round_trip_equals_the_torchmd_train_checkpoint(architecture):
    stored = torch.load(DATA / architecture / "model.ckpt", map_location="cpu", weights_only=True)
    hparams, lightning_state = stored["hyper_parameters"], stored["state_dict"]
    state = fastnnp_state(hparams, model_state_from_lightning(lightning_state, hparams, "current"))
    written = lightning_state_from_model(state, hparams)
    assert_same_state(written, lightning_state)
    assert_same_state(model_state_from_lightning(written, hparams, "current"), state)


@pytest.mark.parametrize("box_vecs", [None, BOX], ids=["no-box", "box_vecs"])
def test_round_trip_with_priors_holds_torchmdnet_keys(box_vecs):
    from lightning_utilities.core.rank_zero import rank_zero_only
    from torchmdnet.models.model import create_model

    stored = torch.load(DATA / "tensornet" / "model.ckpt", map_location="cpu", weights_only=True)
    hparams = dict(stored["hyper_parameters"], box_vecs=box_vecs, **copy.deepcopy(PRIORS))
    state = fastnnp_state(hparams)
    written = lightning_state_from_model(state, hparams)
    if getattr(rank_zero_only, "rank", None) is None:  # TorchMD-Net warns via Lightning's rank-zero
        rank_zero_only.rank = 0  # helper, which raises outside a Trainer otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = create_model(copy.deepcopy(hparams)).state_dict()
    assert sorted(written) == sorted(f"model.{key}" for key in theirs)
    for key in ("representation_model.distance.box", "prior_model.0.distance.box", "prior_model.1.distances.box"):
        assert torch.equal(written[f"model.{key}"], theirs[key]), key
    assert_same_state(model_state_from_lightning(written, hparams, "current"), state)
