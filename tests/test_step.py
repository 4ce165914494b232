"""fastnnp.step: a steady-state energy+forces step with no device->host sync, whose flagged
problems (table overflow, stale grid, drift, non-finite input) are acted on after it."""

import numpy as np
import pytest
import torch
from ase.build import molecule

import fastnnp
from fastnnp.bench.op_count import OpCounter
from fastnnp.kernels.common.search_plan import PlannedTableSearch
from fastnnp.status import StepStatus
from fastnnp.step import EnergyStep, GraphedStep
from fastnnp.systems import water_box


@pytest.fixture(scope="module")
def triton_model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="triton")


def _open_molecule():
    atoms = molecule("CH3CH2OH")
    return torch.tensor(atoms.numbers), torch.tensor(atoms.positions, dtype=torch.float32), None, None


def _triclinic_box():
    atoms = water_box(24, seed=1)
    edge = atoms.cell[0, 0]
    cell = torch.tensor([[edge, 0, 0], [0.3 * edge, edge, 0], [-0.2 * edge, 0.1 * edge, edge]], dtype=torch.float32)
    return torch.tensor(atoms.numbers), torch.tensor(atoms.positions, dtype=torch.float32), None, cell[None]


def _batch():
    parts = [molecule("CH3CH2OH"), molecule("H2O"), molecule("NH3")]
    z = torch.tensor(np.concatenate([a.numbers for a in parts]))
    pos = torch.tensor(np.concatenate([a.positions + 10.0 * k for k, a in enumerate(parts)]), dtype=torch.float32)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([len(a) for a in parts]))
    return z, pos, batch, None


SYSTEMS = {"open": _open_molecule, "triclinic": _triclinic_box, "batch": _batch}


def _assert_fresh(model, result, z, pos, batch, box):
    """``result`` equals a plain model call (inputs checked, searched from scratch)."""
    energy, forces = model(z, pos, batch, box=box)
    torch.testing.assert_close(result.energy, energy, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(result.forces, forces, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_steady_state_step_makes_no_sync(triton_model, system):
    z, pos, batch, box = SYSTEMS[system]()
    step = EnergyStep(triton_model, z, pos, batch, box)
    step.run(pos, box)  # the first call plans the search (host syncs allowed)
    moved = pos + 0.01 * torch.randn_like(pos)
    with OpCounter() as counter:
        result, status = step(moved, box)
    assert counter.syncs == [] and counter.ops > 0
    assert int(status) == 0
    _assert_fresh(triton_model, result, z, moved, batch, box)


def _search(model) -> PlannedTableSearch:
    return model.representation_model.table_search


@pytest.mark.parametrize("system", ["triclinic", "batch"])
def test_overflow_is_recomputed_to_the_fresh_result(triton_model, system):
    """A table forced too narrow flags OVERFLOW; run() replans wider and recomputes."""
    z, pos, batch, box = SYSTEMS[system]()
    step = EnergyStep(triton_model, z, pos, batch, box)
    step.run(pos, box)
    search = _search(triton_model)
    search.plan = search.plan._replace(capacity=2)
    _, status = step(pos, box)
    assert StepStatus(int(status)) & StepStatus.OVERFLOW
    result = step.run(pos, box)
    assert search.plan.capacity > 2 and int(step(pos, box).status) == 0
    _assert_fresh(triton_model, result, z, pos, batch, box)


def test_shrunk_cell_is_flagged_stale_and_recomputed(triton_model):
    """A cell compressed below the planned bins' reach flags STALE: incomplete, recomputed.
    (The cell's smallest height, 5.8 Å, is one bin of the 4.5 Å cutoff; at 0.74 of it, 4.3 Å,
    the search must reach two bins.)"""
    z, pos, batch, box = _triclinic_box()
    step = EnergyStep(triton_model, z, pos, batch, box)
    step.run(pos, box)
    small_pos, small_box = 0.74 * pos, 0.74 * box
    assert StepStatus(int(step(small_pos, small_box).status)) & StepStatus.STALE
    result = step.run(small_pos, small_box)
    _assert_fresh(triton_model, result, z, small_pos, batch, small_box)


def test_drift_out_of_the_grid_stays_right_and_replans(triton_model):
    """Atoms of an open system far outside the planned grid: DRIFT, results still complete."""
    z, pos, batch, box = _open_molecule()
    step = EnergyStep(triton_model, z, pos, batch, box)
    step.run(pos, box)
    search = _search(triton_model)
    stretched = pos * torch.tensor([1.0, 1.0, 4.0]) + 30.0  # every atom outside the planned grid
    result, status = step(stretched, box)
    assert StepStatus(int(status)) == StepStatus.DRIFT
    _assert_fresh(triton_model, result, z, stretched, batch, box)
    builds = search.builds
    step.run(stretched, box)
    assert search.builds == builds + 1 and int(step(stretched, box).status) == 0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, on NaN
def test_non_finite_positions_are_flagged_then_reported(triton_model):
    z, pos, batch, box = _open_molecule()
    step = EnergyStep(triton_model, z, pos, batch, box)
    step.run(pos, box)
    bad = pos.clone()
    bad[4, 1] = float("nan")
    assert StepStatus(int(step(bad, box).status)) & StepStatus.NONFINITE
    with pytest.raises(ValueError, match="position of atom 4 is not finite"):
        step.run(bad, box)


def test_changed_shapes_are_refused(triton_model):
    z, pos, batch, box = _open_molecule()
    step = EnergyStep(triton_model, z, pos, batch, box)
    with pytest.raises(ValueError, match="new EnergyStep"):
        step(pos[:-1], box)
    with pytest.raises(ValueError, match="box must keep"):
        step(pos, torch.eye(3) * 20)


def test_reference_backend_gives_the_same_derivatives(data_dir):
    """On the torch path the step is the checked energy_derivatives, minus the per-call checks."""
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="torch")
    z, pos, batch, box = _triclinic_box()
    result = EnergyStep(model, z, pos, batch, box, properties=("energy", "forces", "energies", "stress")).run(pos, box)
    expected = fastnnp.derivatives.energy_derivatives(model, z, pos, torch.zeros_like(z), box)
    for got, want in zip(result, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_what_is_not_asked_for_is_not_computed(data_dir):
    """By default a step gives energy and forces only (MD's step); the same numbers as with the stress."""
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="torch")
    z, pos, batch, box = _triclinic_box()
    plain = EnergyStep(model, z, pos, batch, box).run(pos, box)
    full = EnergyStep(model, z, pos, batch, box, properties=("stress", "energies")).run(pos, box)
    assert plain.stress is None and plain.atom_energy is None
    assert full.stress.shape == (1, 3, 3) and full.atom_energy.shape == z.shape
    torch.testing.assert_close(plain.energy, full.energy, rtol=0, atol=0)
    torch.testing.assert_close(plain.forces, full.forces, rtol=0, atol=0)


@pytest.mark.parametrize(
    "properties, box, message",
    [(("forces", "virial"), None, "unknown properties \\['virial'\\]"), (("stress",), None, "stress needs a box")],
)
def test_properties_a_step_cannot_give_are_refused(data_dir, properties, box, message):
    model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", backend="torch")
    z, pos, _, _ = _open_molecule()
    with pytest.raises(ValueError, match=message):
        EnergyStep(model, z, pos, None, box, properties=properties)


def test_graphed_step_needs_cuda(triton_model):
    z, pos, batch, box = _open_molecule()
    with pytest.raises(ValueError, match="CUDA graph needs a CUDA device"):
        GraphedStep(EnergyStep(triton_model, z, pos, batch, box))


def test_planned_search_honours_a_wider_capacity():
    """A capacity above the plan's table width plans again at least that wide (never ignored)."""
    z, pos, batch, box = _triclinic_box()
    search = PlannedTableSearch()
    batch = torch.zeros_like(z)
    narrow = search(pos, batch, 4.5, box=box)
    wide = search(pos, batch, 4.5, box=box, capacity=narrow.neighbors.shape[1] + 16)
    assert wide.neighbors.shape[1] == narrow.neighbors.shape[1] + 16 and search.builds == 2
    assert torch.equal(wide.counts, narrow.counts)
