"""Geometry: atoms closer than ``fastnnp.validation.MIN_DISTANCE`` are an error naming both atoms
(and the periodic image); forces are never non-finite without an error."""

import pytest
import torch

import fastnnp
from fastnnp.validation import MIN_DISTANCE


@pytest.fixture(scope="module")
def model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")


def _water(offset=0.0):
    z = torch.tensor([8, 1, 1, 8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                        [3.0, 0.0, 0.0], [3.96, 0.0, 0.0], [2.76, 0.93, 0.0]])
    return z, pos


def test_coincident_atoms_are_named(model):
    z, pos = _water()
    pos[4] = pos[1]  # atom 4 on top of atom 1 (TensorNet would give forces ~1e30)
    with pytest.raises(ValueError, match=r"atoms 1 and 4 are 0 apart, closer than the minimum distance 0.01"):
        model(z, pos)
    pos[4] = pos[1] + torch.tensor([0.5 * MIN_DISTANCE, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"atoms 1 and 4 are 0.005 apart"):
        model(z, pos)
    # just beyond the minimum: accepted, finite
    pos[4] = pos[1] + torch.tensor([2 * MIN_DISTANCE, 0.0, 0.0])
    energy, forces = model(z, pos)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()


def test_close_periodic_image_is_named(model):
    z, pos = _water()
    box = torch.eye(3) * 9.0
    pos[4] = pos[1] + torch.tensor([9.0, 0.0, 0.0])  # atom 4 on an image of atom 1
    with pytest.raises(ValueError, match=r"atoms 1 and 4 \(its periodic image \[-?1, 0, 0\]\) are 0 apart"):
        model(z, pos, box=box)


def test_separate_systems_may_overlap(model):
    """The same position in two systems of a batch is no overlap."""
    z, pos = _water()
    pos[3:] = pos[:3]
    energy, forces = model(z, pos, torch.tensor([0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(energy[0], energy[1])
    torch.testing.assert_close(forces[:3], forces[3:])


def test_non_finite_outputs_are_an_error(data_dir):
    broken = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")
    with torch.no_grad():
        next(broken.output_model.parameters()).fill_(float("nan"))  # the head: no radial table holds it
    z, pos = _water()
    with pytest.raises(ValueError, match=r"the model gave a non-finite energy or forces \(atoms \[0, 1, 2, 3, 4, 5\]\) on finite input"):
        broken(z, pos)


@pytest.fixture(scope="module")
def triton_model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="triton")


def test_triton_kernels_flag_close_atoms_and_the_call_names_them(triton_model):
    """On the Triton path no search of its own runs for this: the kernels' table flags the pair
    (StepStatus.CLOSE, read with the status) and the error names it, in a call and in a step."""
    from fastnnp.step import EnergyStep

    assert triton_model.flags_close_pairs
    z, pos = _water()
    step = EnergyStep(triton_model, z, pos)
    step.run(pos)
    pos[4] = pos[1]
    with pytest.raises(ValueError, match=r"atoms 1 and 4 are 0 apart, closer than the minimum distance 0.01"):
        triton_model(z, pos)
    with pytest.raises(ValueError, match=r"atoms 1 and 4 are 0 apart"):
        step.run(pos)
    box = torch.eye(3) * 9.0
    pos[4] = pos[1] + torch.tensor([9.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"atoms 1 and 4 \(its periodic image \[-?1, 0, 0\]\) are 0 apart"):
        triton_model(z, pos, box=box)
    pos[4] = pos[1] + torch.tensor([2 * MIN_DISTANCE, 0.0, 0.0])
    energy, forces = triton_model(z, pos)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
