"""Port of TorchMD-Net's ``tests/test_calculator.py``: its TorchMD adapter ``External`` (open and
periodic, repeated calls, several systems) and its ASE ``TMDNETCalculator`` (energy, forces,
the total charge from ``atoms.info``, a short MD run) as oracles for fastnnp's model and
``FastNNPCalculator``. Not ported: CUDA graphs and ``compile=True`` (no GPU here; compilation
is tests/test_compile_export.py), the AceFF-2.0 tests (they download the checkpoint)."""

import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from torchmdnet.calculators import External, TMDNETCalculator

import fastnnp
from fastnnp import FastNNPCalculator
from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet
from tests.helpers.parity import assert_matches
from tests.torchmdnet_port.oracle import build_pair, example_batch, hparams


@pytest.fixture(scope="module")
def tensornet(tmp_path_factory):
    """A float32 TensorNet (upstream's calculator model, small), and the same in float64."""
    root = tmp_path_factory.mktemp("calc")
    return {p: build_pair(root, hparams("tensornet", precision=p, cutoff_upper=5.0), seed=40 + p) for p in (32, 64)}


@pytest.mark.parametrize("periodic", [False, True])
def test_compare_forward(tensornet, periodic):
    """Ten calls of ``External`` on one molecule (open, and in a cube of twice the cutoff)
    against fastnnp's model, and against fastnnp's static-shape variant (TorchMD-Net's
    ``static_shapes``, what its CUDA-graph path runs)."""
    pair = tensornet[64]
    inputs = example_batch(two_systems=False, dtype=torch.float64, seed=6)
    z, pos = inputs["z"], inputs["pos"]
    box = 10.0 * torch.eye(3, dtype=torch.float64) if periodic else None
    oracle = External(pair.oracle, z.unsqueeze(0), dtype=torch.float64)
    static = fastnnp.load_model(pair.checkpoint, static_shapes=True)
    for step in range(10):
        moved = pos + 0.05 * step
        with pure_torch_tensornet():
            ref_energy, ref_forces = oracle.calculate(moved.clone(), None if box is None else box.unsqueeze(0))
        for model in (pair.model, static):
            energy, forces = model(z, moved, torch.zeros_like(z), box=box)
            assert_matches(energy.view(-1), forces, ref_energy.detach().view(-1), ref_forces.detach().view(-1, 3), torch.float64)


def test_compare_forward_multiple(tensornet):
    """Two molecules of the same size: ``External``'s [2, n] embeddings against one batched call."""
    pair = tensornet[64]
    first = example_batch(two_systems=False, dtype=torch.float64, seed=7)
    second = example_batch(two_systems=False, dtype=torch.float64, seed=8)
    z = torch.cat([first["z"], second["z"]])
    pos = torch.cat([first["pos"], second["pos"]])
    batch = torch.cat([torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)])
    with pure_torch_tensornet():
        ref_energy, ref_forces = External(pair.oracle, torch.stack([first["z"], second["z"]]),
                                          dtype=torch.float64).calculate(pos.clone(), None)
    energy, forces = pair.model(z, pos, batch)
    assert ref_forces.shape == (2, 6, 3)
    assert_matches(energy.view(-1), forces, ref_energy.detach().view(-1), ref_forces.detach().view(-1, 3), torch.float64)


def test_ase_calculator(tensornet):
    """``FastNNPCalculator`` and ``TMDNETCalculator`` on the same checkpoint (float32): energy
    and forces; a total charge of 100 in ``atoms.info`` changes both alike; ten MD steps."""
    pair = tensornet[32]
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = TMDNETCalculator(str(pair.checkpoint))
    oracle.model = make_pure_torch(oracle.model)
    ours = FastNNPCalculator(str(pair.checkpoint), skin=0)
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)

    def both(charge):
        results = []
        for calc in (oracle, ours):
            copy = atoms.copy()
            copy.info["charge"] = charge
            copy.calc = calc
            with pure_torch_tensornet():
                results.append((copy.get_potential_energy(), copy.get_forces()))
        return results

    (ref_energy, ref_forces), (energy, forces) = both(0)
    assert_matches(energy, forces, ref_energy, ref_forces, torch.float32)
    (charged_ref, charged_ref_forces), (charged, charged_forces) = both(100)
    assert abs(charged_ref - ref_energy) > 1e-3, "the total charge changes nothing: weak test"
    assert_matches(charged, charged_forces, charged_ref, charged_ref_forces, torch.float32)

    trajectories = []
    for calc in (oracle, ours):
        md = atoms.copy()
        md.info["charge"] = 0
        MaxwellBoltzmannDistribution(md, temperature_K=300, rng=np.random.default_rng(1))
        md.calc = calc
        with pure_torch_tensornet():
            VelocityVerlet(md, timestep=0.5 * units.fs).run(10)
        trajectories.append(md.positions.copy())
    assert np.abs(trajectories[0] - trajectories[1]).max() < 1e-6
