"""FastNNPCalculator: energies, forces and stress against finite differences and the model."""

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import fastnnp
from fastnnp.priors import ZBL, Atomref
from fastnnp.calculator import FastNNPCalculator
from fastnnp.neighbors import neighbor_list
from fastnnp.neighbors.reuse import VerletNeighborTable, neighbor_builds
from tests.helpers.calculator_systems import ET, GN, TENSORNET, periodic_box, reference_molecule, triclinic_cell

F64 = dict(dtype=torch.float64, device="cpu")


@pytest.fixture(scope="module")
def tensornet64():
    return FastNNPCalculator(TENSORNET, **F64)


@pytest.mark.parametrize("checkpoint", [TENSORNET, ET, GN], ids=["tensornet", "et", "gn"])
def test_forces_match_finite_differences_on_a_molecule(checkpoint):
    atoms = reference_molecule(1)
    atoms.calc = FastNNPCalculator(checkpoint, **F64)
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numerical, rtol=0, atol=2e-8)


@pytest.mark.parametrize("checkpoint", [TENSORNET, ET, GN], ids=["tensornet", "et", "gn"])
def test_forces_and_stress_match_finite_differences_in_a_triclinic_cell(checkpoint):
    atoms = triclinic_cell(2)
    atoms.calc = FastNNPCalculator(checkpoint, **F64)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), rtol=0, atol=2e-8)
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-6)
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(stress, numerical, rtol=0, atol=1e-10)


def test_results_are_the_models_in_ase_units(tensornet64):
    atoms = periodic_box()
    atoms.calc = tensornet64
    model = fastnnp.load_model(TENSORNET, dtype=torch.float64)
    energy, forces = model(
        torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), box=torch.as_tensor(atoms.cell.array),
        q=torch.zeros(1, dtype=torch.float64),
    )
    assert atoms.get_potential_energy() == pytest.approx(float(energy), abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(float(energy), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), forces.numpy(), rtol=0, atol=1e-10)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)


def test_stress_is_computed_from_the_first_call_that_asks_for_it():
    """MD asking for forces pays no stress; after one get_stress every call brings it (NPT then
    evaluates once per step, not twice)."""
    atoms = triclinic_cell(3)
    atoms.calc = FastNNPCalculator(TENSORNET, **F64)
    atoms.get_forces()
    assert "stress" not in atoms.calc.results
    stress = atoms.get_stress()
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert "stress" in atoms.calc.results
    assert np.abs(atoms.calc.results["stress"] - stress).max() > 0


def test_units_convert_model_units_to_ev_and_angstrom():
    atoms = reference_molecule(0)
    atoms.calc = FastNNPCalculator(TENSORNET, **F64)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    # ASE positions are in Å: positions 10x larger, read in nm, are the same model input.
    stretched = atoms.copy()
    stretched.positions = atoms.positions * 10.0
    stretched.calc = FastNNPCalculator(TENSORNET, length_unit="nm", energy_unit="kcal/mol", **F64)
    kcal = units.kcal / units.mol
    assert stretched.get_potential_energy() == pytest.approx(energy * kcal, rel=1e-12)
    np.testing.assert_allclose(stretched.get_forces(), forces * kcal / 10.0, rtol=1e-10, atol=1e-14)

    hartree_bohr = atoms.copy()
    hartree_bohr.positions = atoms.positions * units.Bohr
    hartree_bohr.calc = FastNNPCalculator(TENSORNET, length_unit="Bohr", energy_unit="Hartree", **F64)
    assert hartree_bohr.get_potential_energy() == pytest.approx(energy * units.Hartree, rel=1e-12)
    np.testing.assert_allclose(hartree_bohr.get_forces(), forces * units.Hartree / units.Bohr, rtol=1e-10, atol=1e-14)


def test_unknown_units_are_refused():
    with pytest.raises(ValueError, match="unknown energy unit 'kcal'"):
        FastNNPCalculator(TENSORNET, energy_unit="kcal", **F64)
    with pytest.raises(ValueError, match="length unit factor must be positive"):
        FastNNPCalculator(TENSORNET, length_unit=-1.0, **F64)


def test_charge_comes_from_info_and_a_change_triggers_recalculation(tensornet64):
    atoms = reference_molecule(0)
    atoms.calc = tensornet64
    neutral = atoms.get_potential_energy()
    atoms.info["charge"] = 1
    cation = atoms.get_potential_energy()
    assert cation != neutral
    default_charged = reference_molecule(0)
    default_charged.calc = FastNNPCalculator(TENSORNET, charge=1, **F64)
    assert default_charged.get_potential_energy() == pytest.approx(cation, abs=1e-12)
    atoms.info["charge"] = "plus one"
    with pytest.raises(ValueError, match=r"atoms.info\['charge'\] must be a number, got 'plus one'"):
        atoms.get_potential_energy()
    atoms.info["charge"] = float("inf")
    with pytest.raises(ValueError, match=r"atoms.info\['charge'\] must be finite, got inf"):
        atoms.get_potential_energy()


def test_atom_energies_sum_to_the_energy(tensornet64):
    atoms = periodic_box()
    atoms.calc = tensornet64
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert np.ptp(energies) > 0


def test_atom_energies_carry_atomref_and_a_share_of_the_mean():
    model = fastnnp.load_model(TENSORNET, dtype=torch.float64)
    plain = reference_molecule(3)
    plain.calc = FastNNPCalculator(model)
    before = plain.get_potential_energies()
    atomref = Atomref(max_z=32).double()
    atomref.atomref.weight.data = torch.linspace(-3, 2, 32, dtype=torch.float64)[:, None]
    model.prior_model = torch.nn.ModuleList([atomref])
    model.mean.fill_(0.7)
    atoms = reference_molecule(3)
    atoms.calc = FastNNPCalculator(model)
    expected = before + atomref.atomref.weight[atoms.numbers, 0].numpy() + 0.7 / len(atoms)
    np.testing.assert_allclose(atoms.get_potential_energies(), expected, atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(expected.sum(), abs=1e-10)


def test_atom_energies_are_refused_with_a_pair_prior():
    model = fastnnp.load_model(TENSORNET, dtype=torch.float64)
    model.prior_model = torch.nn.ModuleList(
        [ZBL(1.0, atomic_number=list(range(32)), distance_scale=1e-10, energy_scale=1.602176634e-19)]
    )
    atoms = reference_molecule(0)
    atoms.calc = FastNNPCalculator(model)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="per-atom energies"):
        atoms.get_potential_energies()


def test_ensemble_reports_mean_and_spread():
    atoms = triclinic_cell(3)
    members = [FastNNPCalculator(path, **F64) for path in (TENSORNET, ET)]
    singles = []
    for calc in members:
        atoms.calc = calc
        singles.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    atoms.calc = FastNNPCalculator([TENSORNET, ET], **F64)
    energies = np.array([s[0] for s in singles])
    forces = np.stack([s[1] for s in singles])
    assert atoms.get_potential_energy() == pytest.approx(energies.mean(), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(0), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), np.mean([s[2] for s in singles], 0), atol=1e-12)
    assert atoms.calc.results["energy_std"] == pytest.approx(energies.std(ddof=1), abs=1e-10)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], forces.std(0, ddof=1), atol=1e-10)


def test_calculate_batch_equals_one_at_a_time(tensornet64):
    images = [reference_molecule(0), triclinic_cell(1), reference_molecule(4), periodic_box(), triclinic_cell(5)]
    images[2].info["charge"] = -1
    batched = tensornet64.calculate_batch(images, properties=["energy", "forces", "energies"], max_atoms=120)
    for atoms, result in zip(images, batched, strict=True):
        atoms.calc = tensornet64
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        assert result["free_energy"] == result["energy"]
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), atol=1e-10)
        np.testing.assert_allclose(result["energies"], atoms.get_potential_energies(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(result["stress"], atoms.get_stress(), atol=1e-12)
        else:
            assert "stress" not in result


def test_a_loaded_model_can_be_passed(tensornet64):
    model = fastnnp.load_model(TENSORNET, dtype=torch.float64)
    atoms = reference_molecule(2)
    atoms.calc = FastNNPCalculator(model)
    energy = atoms.get_potential_energy()
    atoms.calc = tensornet64
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    with pytest.raises(ValueError, match="already loaded"):
        FastNNPCalculator(model, dtype=torch.float32)


def test_first_call_time_is_recorded():
    atoms = reference_molecule(0)
    atoms.calc = FastNNPCalculator(TENSORNET, **F64)
    assert atoms.calc.first_call_seconds is None
    atoms.get_potential_energy()
    assert atoms.calc.first_call_seconds > 0
    batch_calc = FastNNPCalculator(TENSORNET, **F64)
    batch_calc.calculate_batch([atoms], progress=False)
    assert batch_calc.first_call_seconds > 0


def test_array_valued_info_is_compared_element_wise(tensornet64):
    atoms = reference_molecule(0)
    atoms.info["dipole"] = np.array([0.1, 0.2, 0.3])
    atoms.calc = tensornet64
    energy = atoms.get_potential_energy()
    atoms.info["dipole"] = np.array([0.1, 0.2, 0.3])
    assert tensornet64.check_state(atoms) == []
    atoms.info["dipole"] = np.array([0.1, 0.2, 0.4])
    assert tensornet64.check_state(atoms) == ["info"]
    assert atoms.get_potential_energy() == energy


def test_negative_skin_is_refused():
    with pytest.raises(ValueError, match="skin"):
        FastNNPCalculator(TENSORNET, skin=-0.1, **F64)


# Bad input: each is a clear error or handled correctly (README, "ASE calculator").


def test_atoms_outside_the_cell_are_wrapped(tensornet64):
    atoms = triclinic_cell(0)
    atoms.calc = tensornet64
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    shifted = atoms.copy()
    shifted.positions += np.array([2, -1, 3]) @ atoms.cell.array  # every atom outside the cell
    shifted.positions[0] += 3 * atoms.cell.array[1]
    shifted.calc = tensornet64
    assert shifted.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(shifted.get_forces(), forces, atol=1e-9)
    np.testing.assert_allclose(shifted.get_stress(), stress, atol=1e-10)


def test_pbc_with_a_zero_cell_is_refused(tensornet64):
    atoms = reference_molecule(0)
    atoms.pbc = True
    atoms.calc = tensornet64
    with pytest.raises(ValueError, match="non-zero volume"):
        atoms.get_potential_energy()


def _sheared_cell(length: float, ratio: float) -> np.ndarray:
    """Rows a = (L, 0, 0), b = (0, L, 0), c = (L/2, L/2, h) with volume / (|a| |b| |c|) = ratio."""
    return np.array([[length, 0, 0], [0, length, 0], [length / 2, length / 2, ratio * length / np.sqrt(2)]])


@pytest.mark.parametrize(
    "cell, singular",
    [
        # volume ratio 1e-11: singular by the 1e-10 rule (the search used to accept ratios > 1e-12)
        (_sheared_cell(10.0, 1e-11), True),
        # ratio 5e-10 but volume 3.5e-10 Å³: not singular (the calculator used to refuse volumes
        # below 1e-9 Å³); far too thin for the cutoff, which the search then says
        (_sheared_cell(1.0, 5e-10), False),
    ],
    ids=["ratio-1e-11", "ratio-5e-10"],
)
def test_nearly_singular_cells_get_one_verdict_from_every_layer(tensornet64, cell, singular):
    """neighbor_list, a model call's validation and the calculator decide alike."""
    volume, lengths = abs(np.linalg.det(cell)), np.prod(np.linalg.norm(cell, axis=1))
    assert (1e-12 < volume / lengths < 1e-10) if singular else (1e-10 < volume / lengths and volume < 1e-9)
    atoms = reference_molecule(0)
    atoms.cell, atoms.pbc = cell, True
    atoms.calc = tensornet64
    z, pos, box = torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), torch.as_tensor(cell)
    thin = "box is too thin"
    with pytest.raises(ValueError, match="box is singular" if singular else thin):
        neighbor_list(pos, torch.zeros(len(z), dtype=torch.long), 4.5, box=box)
    with pytest.raises(ValueError, match="box of system 0 is singular" if singular else thin):
        tensornet64.model(z, pos, box=box)
    with pytest.raises(ValueError, match="non-zero volume" if singular else thin):
        atoms.get_potential_energy()


def test_a_cell_of_tiny_volume_in_a_tiny_length_unit_is_accepted():
    """Volume ~3e-10 Å³, a normal cell in the model's unit (1e-4 Å): the calculator accepts it
    as the model does (no absolute volume bound) and gives the unscaled cell's energy."""
    atoms = triclinic_cell(2)
    atoms.calc = FastNNPCalculator(TENSORNET, **F64)
    energy = atoms.get_potential_energy()
    tiny = atoms.copy()
    tiny.set_cell(atoms.cell.array * 1e-4, scale_atoms=True)
    assert abs(tiny.cell.volume) < 1e-9
    tiny.calc = FastNNPCalculator(TENSORNET, length_unit=1e-4, skin=1e-4, **F64)  # skin in Å
    assert tiny.get_potential_energy() == pytest.approx(energy, rel=1e-12)


def test_the_verlet_skin_covers_a_pair_prior():
    """A ZBL prior's search is cached like the representation's, with the plain search's results."""
    results = []
    for skin in (0.0, 0.5):
        model = fastnnp.load_model(TENSORNET, dtype=torch.float64)
        model.prior_model = torch.nn.ModuleList(
            [ZBL(2.0, atomic_number=list(range(32)), distance_scale=1e-10, energy_scale=1.602176634e-19)]
        )
        atoms = reference_molecule(0)
        atoms.calc = FastNNPCalculator(model, skin=skin)
        rng = np.random.default_rng(3)
        for _ in range(3):
            atoms.positions = atoms.positions + 0.01 * rng.standard_normal(atoms.positions.shape)
            results.append((atoms.get_potential_energy(), atoms.get_forces()))
        assert neighbor_builds(model) == (0 if skin == 0 else 2)  # representation + prior, once each
    for (e0, f0), (e1, f1) in zip(results[:3], results[3:], strict=True):
        assert e0 == e1
        np.testing.assert_array_equal(f0, f1)


def test_elements_the_model_cannot_handle_are_refused(tensornet64):
    atoms = reference_molecule(0)
    atoms.numbers[3] = 79  # gold; the model's embedding covers Z < 32
    atoms.calc = tensornet64
    with pytest.raises(ValueError, match="atomic number 79 of atom 3 is not supported"):
        atoms.get_potential_energy()


def test_empty_atoms_are_refused(tensornet64):
    atoms = reference_molecule(0)[[]]
    atoms.calc = tensornet64
    with pytest.raises(ValueError, match="empty"):
        atoms.get_potential_energy()


def test_mixed_periodicity_is_refused(tensornet64):
    atoms = triclinic_cell(0)
    atoms.pbc = [True, True, False]
    atoms.calc = tensornet64
    with pytest.raises(ValueError, match=r"mixed periodicity pbc=\[True, True, False\]"):
        atoms.get_potential_energy()


def test_stress_of_a_molecule_is_not_implemented(tensornet64):
    atoms = reference_molecule(0)
    atoms.calc = tensornet64
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_non_finite_positions_are_refused(tensornet64):
    atoms = reference_molecule(0)
    atoms.positions[2, 1] = np.nan
    atoms.calc = tensornet64
    with pytest.raises(ValueError, match="position of atom 2 is not finite"):
        atoms.get_potential_energy()


def test_triton_backend_runs_without_skin_and_agrees_with_the_reference():
    atoms = triclinic_cell(0)
    atoms.calc = FastNNPCalculator(TENSORNET, dtype=torch.float32, device="cpu", backend="triton")
    representation = atoms.calc.model.representation_model
    assert not isinstance(representation.table_search, VerletNeighborTable)
    triton = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = FastNNPCalculator(TENSORNET, dtype=torch.float32, device="cpu", backend="torch")
    # float32 on both paths: forces up to 2.4 eV/Å, stress up to 0.01 eV/Å³
    assert triton[0] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    np.testing.assert_allclose(triton[1], atoms.get_forces(), atol=3e-5)
    np.testing.assert_allclose(triton[2], atoms.get_stress(), atol=3e-7)


@pytest.fixture(scope="module")
def tensornet2_checkpoint(tmp_path_factory):
    """A TensorNet2 checkpoint (Coulomb head, randomised) built with TorchMD-Net's create_model."""
    pytest.importorskip("torchmdnet")
    from tests.helpers.tensornet2 import build_tensornet2, tensornet2_hparams
    from tests.helpers.variants import write_checkpoint

    hp = tensornet2_hparams(precision=64)
    reference = build_tensornet2(hp, seed=5)
    return write_checkpoint(tmp_path_factory.mktemp("tn2") / "tn2.ckpt", reference.state_dict(), hp)


def test_tensornet2_charges_follow_the_total_charge_in_info(tensornet2_checkpoint):
    model = fastnnp.load_model(tensornet2_checkpoint)
    atoms = reference_molecule(0)
    atoms.calc = FastNNPCalculator(model)
    neutral = atoms.get_charges()
    assert neutral.shape == (len(atoms),) and np.abs(neutral).max() > 0.01
    assert neutral.sum() == pytest.approx(0.0, abs=1e-5)
    atoms.info["charge"] = -1
    anion = atoms.get_charges()
    assert anion.sum() == pytest.approx(-1.0, abs=1e-5)
    z = torch.as_tensor(atoms.numbers)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float64)
    expected = model.partial_charges(z, pos, q=torch.tensor([-1.0], dtype=torch.float64))
    np.testing.assert_allclose(anion, expected.numpy(), rtol=0, atol=1e-12)
    energy, forces = model(z, pos, q=torch.tensor([-1.0], dtype=torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(energy), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), forces.numpy(), rtol=0, atol=1e-9)
    other = reference_molecule(1)
    other.info["charge"] = 2
    batched = atoms.calc.calculate_batch([atoms, other], properties=("energy", "forces", "charges"), progress=False)
    np.testing.assert_allclose(batched[0]["charges"], anion, rtol=0, atol=1e-12)
    assert batched[1]["charges"].shape == (len(other),)
    assert batched[1]["charges"].sum() == pytest.approx(2.0, abs=1e-5)


def test_tensornet2_forces_match_finite_differences(tensornet2_checkpoint):
    atoms = reference_molecule(1)
    atoms.info["charge"] = 1
    atoms.calc = FastNNPCalculator(tensornet2_checkpoint, **F64)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), atol=1e-5)


def test_charges_of_a_model_without_charges_are_not_implemented(tensornet64):
    atoms = reference_molecule(0)
    atoms.calc = tensornet64
    with pytest.raises(PropertyNotImplementedError, match="charges need a model that predicts partial charges"):
        atoms.get_charges()
