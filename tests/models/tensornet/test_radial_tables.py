"""TensorNet with the float32 radial tables (``radial="auto"``) against its exact filters, both
evaluated in float64 so that only the tables' error shows, on TorchMD-Net-built variant
checkpoints: energy within 1e-7 relative, forces within 1e-6 of the largest force
(:mod:`tests.helpers.radial_tables`)."""

import pytest

from tests.helpers.radial_tables import variant_tables

CASES = {
    "expnorm": {},
    "gauss": dict(rbf_type="gauss"),
    "cutoff_lower": dict(cutoff_lower=0.8),
    "SO3": dict(equivariance_invariance_group="SO(3)"),
    "trainable_rbf": dict(trainable_rbf=True),
    "rbf64": dict(num_rbf=64),
    "F128-rbf32": dict(embedding_dimension=128, num_rbf=32, num_layers=1),
}


@pytest.mark.parametrize("inputs_kind", ["molecules", "periodic"])
@pytest.mark.parametrize("name", list(CASES))
def test_float32_tables_match_the_exact_filters(request, tmp_path, name, inputs_kind):
    hp, names = variant_tables(request, tmp_path, "tn", CASES[name], inputs_kind)
    assert names == ["tensor_embedding"] + [f"layers.{k}" for k in range(hp["num_layers"])]
