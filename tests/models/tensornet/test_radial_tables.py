"""TensorNet with the float32 radial tables (``radial="auto"``) against its exact filters, both
evaluated in float64 so that only the tables' error shows, on TorchMD-Net-built variant
checkpoints: energy within 1e-7 relative, forces within 1e-6 of the largest force."""

import pytest
import torch

import fastnnp
from fastnnp.models.common.radial_table import radial_tables
from tests.helpers.variants import build_reference, make_hparams, molecules, periodic_cells, seed_of, write_checkpoint

CASES = {
    "expnorm": {},
    "gauss": dict(rbf_type="gauss"),
    "cutoff_lower": dict(cutoff_lower=0.8),
    "SO3": dict(equivariance_invariance_group="SO(3)"),
    "trainable_rbf": dict(trainable_rbf=True),
    "rbf64": dict(num_rbf=64),
    "F128-rbf32": dict(embedding_dimension=128, num_rbf=32, num_layers=1),
}


def _energy_forces(model, inputs):
    energy, forces = model(**inputs)
    return energy.detach(), forces.detach()


@pytest.mark.parametrize("inputs_kind", ["molecules", "periodic"])
@pytest.mark.parametrize("name", list(CASES))
def test_float32_tables_match_the_exact_filters(request, tmp_path, name, inputs_kind):
    hp = make_hparams("tn", **CASES[name])
    path = write_checkpoint(tmp_path / "model.ckpt", build_reference(hp, seed_of(request)).state_dict(), hp)
    tabled = fastnnp.load_model(path, dtype=torch.float32)  # radial="auto": tables
    assert len(radial_tables(tabled)) == 1 + hp["num_layers"]
    tabled = tabled.to(torch.float64)  # the float32 tables, evaluated in float64
    exact = fastnnp.load_model(path, dtype=torch.float64)
    assert radial_tables(exact) == []
    inputs = molecules(torch.float64) if inputs_kind == "molecules" else periodic_cells(torch.float64)
    energy, forces = _energy_forces(tabled, inputs)
    ref_energy, ref_forces = _energy_forces(exact, inputs)
    assert ref_forces.abs().max() > 1e-3
    assert ((energy - ref_energy).abs() <= 1e-7 * ref_energy.abs().clamp(min=1)).all(), (energy - ref_energy)
    assert (forces - ref_forces).abs().max() <= 1e-6 * ref_forces.abs().max()
