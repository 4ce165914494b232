"""The Equivariant Transformer with the float32 radial tables (``radial="auto"``) against its
exact filters, both evaluated in float64 so that only the tables' error shows: energy within
1e-7 relative, forces within 1e-6 of the largest force (:mod:`tests.helpers.radial_tables`), on
the shipped checkpoint and on TorchMD-Net-built variants. Each layer's table holds its
``[dk | dv]`` channels (no cutoff) over [0, cutoff_upper], so the self loops (d = 0) read its
first knot, the exact value, also when cutoff_lower > 0."""

import pytest

from tests.helpers.radial_tables import miss_bound, shipped_tables, variant_tables

SHIPPED_TABLES = ["neighbor_embedding", "attention_layers.0", "attention_layers.1"]  # of the shipped checkpoint
CASES = {
    "expnorm": dict(neighbor_embedding=True),
    "gauss": dict(rbf_type="gauss", neighbor_embedding=True),
    "cutoff_lower": dict(cutoff_lower=0.8, neighbor_embedding=True),
    "cutoff_lower-values-vector_cutoff": dict(cutoff_lower=0.8, distance_influence="values", vector_cutoff=True),
    "keys-ssp-tanh": dict(distance_influence="keys", activation="ssp", attn_activation="tanh"),
    "none": dict(distance_influence="none", neighbor_embedding=True),
    "trainable_rbf": dict(trainable_rbf=True, neighbor_embedding=True),
    "rbf64": dict(num_rbf=64),
    "F128-rbf32": dict(embedding_dimension=128, num_rbf=32, num_layers=1, num_heads=8, neighbor_embedding=True),
}


def expected_tables(hp: dict) -> list[str]:
    layers = [] if hp["distance_influence"] == "none" else [f"attention_layers.{k}" for k in range(hp["num_layers"])]
    return (["neighbor_embedding"] if hp["neighbor_embedding"] else []) + layers


@pytest.mark.parametrize("inputs_kind", ["molecules", "periodic"])
@pytest.mark.parametrize("name", list(CASES))
def test_float32_tables_match_the_exact_filters(request, tmp_path, name, inputs_kind):
    hp, names = variant_tables(request, tmp_path, "et", CASES[name], inputs_kind)
    assert names == expected_tables(hp)


@pytest.mark.parametrize("prefix", ["", "pbc_"], ids=["molecules", "periodic"])
def test_shipped_checkpoint_tables_match_the_exact_filters(data_dir, prefix):
    assert shipped_tables(data_dir, "et", prefix) == SHIPPED_TABLES


@pytest.mark.parametrize("missed", [SHIPPED_TABLES[0], SHIPPED_TABLES[2]])
def test_a_filter_whose_table_misses_its_bound_runs_exact(data_dir, monkeypatch, missed):
    """The other filters keep their tables; the warning names the one that runs exact."""
    miss_bound(monkeypatch, missed)
    assert shipped_tables(data_dir, "et", "") == [name for name in SHIPPED_TABLES if name != missed]
