"""Port of TorchMD-Net's ``tests/test_examples.py``: a model from each of the example training
configurations in TorchMD-Net's ``examples/`` (torchmd-net commit 833c077), called as
``model(z, pos, batch)`` and with ``q=None, s=None``. The table holds each example's model
hyper-parameters (widths shrunk to :data:`SMALL_WIDTHS`, precision 64 for exact comparison);
the energies and forces are TorchMD-Net's for the same weights."""

import pytest
import torch

from tests.torchmdnet_port.oracle import (
    SMALL_WIDTHS,
    assert_same_outputs,
    build_pair,
    example_batch,
    hparams,
    oracle_outputs,
)

ET = dict(model="equivariant-transformer", neighbor_embedding=True, num_heads=8, vector_cutoff=True)
TN = dict(model="tensornet", equivariance_invariance_group="O(3)", max_z=128)
EXAMPLES = {
    "ET-ANI1": dict(ET, num_layers=6, num_rbf=32, cutoff_upper=5.0, max_num_neighbors=64, prior_model="Atomref", derivative=False),
    "ET-MD17": dict(ET, num_layers=6, num_rbf=32, cutoff_upper=5.0, max_num_neighbors=32, standardize=True, derivative=True),
    "ET-QM9": dict(ET, num_layers=8, num_rbf=64, cutoff_upper=5.0, max_num_neighbors=64, prior_model="Atomref", derivative=False),
    "ET-SPICE": dict(ET, num_layers=5, num_rbf=64, cutoff_upper=10.0, max_num_neighbors=128, derivative=True),
    "TensorNet-ANI1X": dict(TN, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=128, derivative=True),
    "TensorNet-ANI2X": dict(TN, num_layers=2, num_rbf=32, cutoff_upper=5.0, max_num_neighbors=128, remove_ref_energy=True, derivative=True),
    "TensorNet-MACEOFF": dict(TN, num_layers=2, num_rbf=64, cutoff_upper=10.0, max_num_neighbors=128, derivative=True),
    "TensorNet-QM9": dict(TN, num_layers=3, num_rbf=32, cutoff_upper=5.0, max_num_neighbors=64, prior_model="Atomref", derivative=False),
    "TensorNet-SPICE": dict(TN, num_layers=2, num_rbf=64, cutoff_upper=10.0, max_num_neighbors=128, derivative=True),
    "TensorNet-rMD17": dict(TN, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=32, max_z=100, standardize=True, derivative=True),
}


def example_hparams(name: str) -> dict:
    """The example's hyper-parameters as ``torchmd-train`` stores them in a checkpoint: an
    Atomref prior with its table in the weights, and with ``remove_ref_energy`` the disabled
    Atomref that training appends."""
    example = dict(EXAMPLES[name], embedding_dimension=SMALL_WIDTHS["embedding_dimension"], precision=64)
    example.setdefault("max_z", 100)
    prior = example.pop("prior_model", None)
    hp = hparams(**example)
    if prior == "Atomref":
        hp.update(prior_model=["Atomref"], prior_args=[{"max_z": hp["max_z"]}])
    if hp.get("remove_ref_energy"):
        hp.update(prior_model=["Atomref"], prior_args=[{"max_z": hp["max_z"], "trainable": False, "enable": False}])
    return hp


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_configuration(tmp_path, name):
    hp = example_hparams(name)
    pair = build_pair(tmp_path, hp, seed=len(name), derivative=hp["derivative"])
    inputs = example_batch(dtype=torch.float64)
    ref = oracle_outputs(pair.oracle, inputs)
    assert (ref[1] is None) == (not hp["derivative"])
    assert_same_outputs(pair.model(**inputs), ref, torch.float64)
    assert_same_outputs(pair.model(**inputs, q=None, s=None), ref, torch.float64)
