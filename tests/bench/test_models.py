"""The benchmark's presets: each is a TorchMD-Net checkpoint that fastnnp and TorchMD-Net load
to the same numbers."""

import importlib.util

import pytest
import torch

import fastnnp
from fastnnp.bench.models import PRESETS, write_preset_checkpoint
from tests.helpers.parity import assert_matches

HAS_TORCHMDNET = importlib.util.find_spec("torchmdnet") is not None


@pytest.mark.skipif(not HAS_TORCHMDNET, reason="needs torchmd-net")
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_checkpoint_loads_in_both_to_the_same_numbers(tmp_path, name):
    from torchmdnet.models.model import load_model as torchmdnet_load_model

    path = write_preset_checkpoint(name, str(tmp_path / f"{name}.ckpt"), seed=3)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 1, 7])
    pos = torch.randn(len(z), 3) * 1.2
    batch = torch.zeros(len(z), dtype=torch.long)
    ours = fastnnp.load_model(path, backend="torch")
    theirs = torchmdnet_load_model(path, derivative=True)
    energy, forces = ours(z, pos, batch)
    ref_energy, ref_forces = theirs(z, pos, batch)
    assert_matches(energy, forces, ref_energy.detach(), ref_forces.detach(), torch.float32)
