"""fastnnp as a torch-sim model: the interface's own validation, batched results against
FastNNPCalculator per structure (float64), ensembles, Langevin runs, bad input."""

import numpy as np
import pytest
import torch
import torch_sim as ts
from ase.build import bulk
from torch_sim.models.interface import validate_model_outputs

from fastnnp import load_model
from fastnnp.calculator import FastNNPCalculator
from fastnnp.torchsim import FastNNPModel
from tests.helpers.calculator_systems import ET, TENSORNET, reference_molecule, triclinic_cell

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model64():
    return FastNNPModel(TENSORNET, device="cpu", dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_torch_sims_validation_passes(dtype):
    model = FastNNPModel(TENSORNET, device="cpu", dtype=dtype)
    assert (model.device, model.dtype, model.compute_forces, model.compute_stress) == (CPU, dtype, True, True)
    assert model.memory_scales_with == "n_atoms"
    validate_model_outputs(model, CPU, dtype)


def test_batched_results_equal_the_calculator_per_structure(model64):
    """Open molecules in one call, periodic cells (triclinic, thinner than twice the cutoff;
    torch-sim's column-vector cell) in another: energy, forces and the 3 x 3 stress."""
    calc = FastNNPCalculator(TENSORNET, dtype=torch.float64, device="cpu")
    for images in ([reference_molecule(k) for k in range(4)], [triclinic_cell(k, seed=k) for k in range(3)]):
        state = ts.io.atoms_to_state(images, CPU, torch.float64)
        out = model64(state)
        properties = ("energy", "forces", "stress") if images[0].pbc.all() else ("energy", "forces")
        expected = calc.calculate_batch(images, properties=properties, progress=False)
        np.testing.assert_allclose(out["energy"].numpy(), [r["energy"] for r in expected], rtol=1e-10)
        np.testing.assert_allclose(out["forces"].numpy(), np.concatenate([r["forces"] for r in expected]), rtol=0, atol=1e-10)
        if images[0].pbc.all():
            voigt = out["stress"][:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            np.testing.assert_allclose(voigt.numpy(), [r["stress"] for r in expected], rtol=0, atol=1e-12)
            np.testing.assert_allclose(out["stress"].numpy(), out["stress"].mT.numpy(), atol=1e-14)
        else:
            assert "stress" not in out


def test_the_stress_is_the_strain_derivative_in_torch_sims_convention(model64):
    """Finite differences of the energy under the strain (1 + ε) applied to torch-sim's cell
    (columns) and positions: stress_ij = dE/dε_ij / V."""
    state = ts.io.atoms_to_state([triclinic_cell(0)], CPU, torch.float64)
    stress = model64(state)["stress"][0]
    h, (i, j) = 1e-5, (0, 2)
    energies = []
    for sign in (1, -1):
        strain = torch.eye(3, dtype=torch.float64)
        strain[i, j] += sign * h / 2
        strain[j, i] += sign * h / 2
        moved = state.clone()
        moved.positions = state.positions @ strain.T
        moved.cell = strain @ state.cell
        energies.append(model64(moved)["energy"][0])
    numeric = (energies[0] - energies[1]) / (2 * h) / torch.linalg.det(state.cell[0])
    assert stress[i, j].item() == pytest.approx(numeric.item(), rel=1e-6)


def test_charges_come_from_the_state_or_the_default():
    """Per-system charges on the state (torch-sim's extras) win over ``charge``; TensorNet's
    ``1 + 0.1 q`` factors show the difference."""
    images = [reference_molecule(0), reference_molecule(1)]
    loaded = load_model(TENSORNET, derivative=False, dtype=torch.float64).requires_grad_(False)
    model = FastNNPModel(loaded, charge=1.0)
    calc = FastNNPCalculator(loaded)
    state = ts.io.atoms_to_state(images, CPU, torch.float64)
    for charges in ([1.0, 1.0], [-1.0, 2.0]):
        if charges != [1.0, 1.0]:
            state.charge = torch.tensor(charges, dtype=torch.float64)
        for atoms, charge in zip(images, charges, strict=True):
            atoms.info["charge"] = charge
        expected = [r["energy"] for r in calc.calculate_batch(images, progress=False)]
        np.testing.assert_allclose(model(state)["energy"].numpy(), expected, rtol=1e-10)
    assert expected[0] != pytest.approx(calc.calculate_batch([reference_molecule(0)], progress=False)[0]["energy"])


def test_an_ensemble_gives_the_mean_and_the_spread():
    images = [reference_molecule(0), reference_molecule(5)]
    model = FastNNPModel([TENSORNET, ET], device="cpu", dtype=torch.float64)
    out = model(ts.io.atoms_to_state(images, CPU, torch.float64))
    expected = FastNNPCalculator([TENSORNET, ET], dtype=torch.float64, device="cpu").calculate_batch(images, progress=False)
    np.testing.assert_allclose(out["energy"].numpy(), [r["energy"] for r in expected], rtol=1e-10)
    np.testing.assert_allclose(out["energy_std"].numpy(), [r["energy_std"] for r in expected], rtol=1e-10)
    np.testing.assert_allclose(out["forces_std"].numpy(), np.concatenate([r["forces_std"] for r in expected]), atol=1e-10)


def test_langevin_runs_of_8_molecules_and_of_2_periodic_boxes_complete():
    model = FastNNPModel(TENSORNET, device="cpu", dtype=torch.float32)
    molecules = [reference_molecule(k) for k in range(8)]
    boxes = [bulk("Si", "diamond", a=5.43, cubic=True), triclinic_cell(1)]
    for images in (molecules, boxes):
        final = ts.integrate(
            images, model, integrator=ts.nvt_langevin, n_steps=10, temperature=300.0, timestep=0.0005
        )
        assert final.n_systems == len(images)
        assert torch.isfinite(final.positions).all() and torch.isfinite(final.energy).all()
        assert not torch.equal(final.positions, ts.io.atoms_to_state(images, CPU, torch.float32).positions)


def test_bad_input_is_refused_with_the_reason(model64):
    state = ts.io.atoms_to_state([reference_molecule(0)], CPU, torch.float64)
    with pytest.raises(TypeError, match="FastNNPModel.forward takes a state only, got cutoff"):
        model64(state, cutoff=3.0)
    with pytest.raises(TypeError, match=r"pos has dtype torch.float32 but the model runs in torch.float64"):
        model64(ts.io.atoms_to_state([reference_molecule(0)], CPU, torch.float32))
    slab = ts.io.atoms_to_state([triclinic_cell(0)], CPU, torch.float64)
    slab.pbc = torch.tensor([True, True, False])
    with pytest.raises(ValueError, match=r"mixed periodicity pbc=\[True, True, False\] is not supported"):
        model64(slab)
    with pytest.raises(ValueError, match="device applies to checkpoint paths; a loaded model runs where it lives"):
        FastNNPModel(model64.model, device="cpu")
