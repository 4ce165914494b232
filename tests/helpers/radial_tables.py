"""A checkpoint's float32 radial tables (``radial="auto"``) against its exact filters, both
evaluated in float64 so that only the tables' error shows: energy within 1e-7 relative, forces
within 1e-6 of the largest force; and every filter either tabulated within its bound or named
in a warning.

The float32 tables' coefficients are float32 numbers: a table's value carries the rounding of
its knot value to float32 (2^-24 relative) whatever its bound. For a few models that alone moves
the energy by more than 1e-7 relative. Measured on an ET variant (distance_influence keys, ssp,
tanh): the exact float64 filters with their values rounded to float32 moved the energy by
1.9e-6 (1.05e-7 relative), the float32 tables by 2.2e-6, the same tables kept in float64 by
1.9e-9. So the energy may also differ by up to ``FLOOR_FACTOR`` times what rounding the exact
filter values to float32 changes (:func:`float32_filter_energy`): a table is asked to be as
accurate as any float32 filter can be.
"""

import contextlib
import warnings

import numpy as np
import torch

import fastnnp
from fastnnp.models.common.radial_table import BOUNDS, radial_tables

ENERGY_TOLERANCE = 1e-7  # relative (to max(1, |E|))
FORCE_TOLERANCE = 1e-6  # relative to the largest exact force
FLOOR_FACTOR = 3.0  # times the energy change of the exact filters rounded to float32


def load_tabled(path) -> tuple[torch.nn.Module, list[str]]:
    """The float32 model of ``path`` with its tables (``radial="auto"``), and the filters that
    got none. Every filter the representation offers gets a table within ``BOUNDS[float32]``
    or a warning that names it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fastnnp.load_model(path, dtype=torch.float32)
    messages = [str(w.message) for w in caught]
    tables = {table.name: table for table in radial_tables(model)}
    assert all(table.bound <= BOUNDS[torch.float32] for table in tables.values()), tables
    untabled = []
    for radial_filter in model.representation_model.radial_filters():
        if radial_filter.path in tables:
            assert model.representation_model.get_submodule(radial_filter.path).radial_table is tables[radial_filter.path]
        else:
            assert any(m.startswith(f"radial filter {radial_filter.path}: ") for m in messages), (radial_filter.path, messages)
            untabled.append(radial_filter.path)
    return model, untabled


def energy_forces(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    energy, forces = model(**inputs)[:2]
    return energy.detach(), forces.detach()


@contextlib.contextmanager
def filters_rounded_to_float32(model):
    """Within: every radial filter of ``model`` (its module's ``distance_filter``) returns its
    exact values rounded to float32 (in the model's dtype)."""
    modules = [model.representation_model.get_submodule(f.path) for f in model.representation_model.radial_filters()]
    for module in modules:
        exact = module.distance_filter
        module.distance_filter = lambda *args, exact=exact: (lambda w: w.float().to(w.dtype))(exact(*args))
    try:
        yield
    finally:
        for module in modules:
            del module.distance_filter


def float32_filter_energy(exact, inputs: dict) -> torch.Tensor:
    """The energy of the exact float64 model ``exact`` with its filters' values rounded to float32."""
    with filters_rounded_to_float32(exact):
        return exact(**inputs)[0].detach()


def assert_tables_match_exact(path, inputs: dict) -> list[str]:
    """Float32 tables of ``path`` evaluated in float64 (the float32 coefficients, cast) against
    the exact float64 model on ``inputs`` (float64). Returns the names of the tables used."""
    tabled, _ = load_tabled(path)
    names = [table.name for table in radial_tables(tabled)]
    tabled = tabled.to(torch.float64)
    exact = fastnnp.load_model(path, dtype=torch.float64)
    assert radial_tables(exact) == []
    energy, forces = energy_forces(tabled, inputs)
    ref_energy, ref_forces = energy_forces(exact, inputs)
    assert ref_forces.abs().max() > 1e-3, "zero reference forces: weak test"
    energy_error = (energy - ref_energy).abs()
    tolerance = ENERGY_TOLERANCE * ref_energy.abs().clamp(min=1)
    if not (energy_error <= tolerance).all():  # within what float32 filter values allow?
        floor = (float32_filter_energy(exact, inputs) - ref_energy).abs()
        tolerance = torch.maximum(tolerance, FLOOR_FACTOR * floor)
    assert (energy_error <= tolerance).all(), (energy_error, tolerance)
    force_error = (forces - ref_forces).abs().max()
    assert force_error <= FORCE_TOLERANCE * ref_forces.abs().max(), (force_error, ref_forces.abs().max())
    return names


def reference_inputs(ref, prefix: str) -> dict:
    """The float64 inputs of a shipped ``reference.npz``: the molecules (prefix "") or the box
    ("pbc_")."""
    z = torch.as_tensor(ref[f"{prefix}z"])
    inputs = dict(z=z, pos=torch.as_tensor(np.asarray(ref[f"{prefix}pos"]), dtype=torch.float64))
    if prefix:
        inputs.update(batch=torch.zeros(len(z), dtype=torch.long),
                      box=torch.as_tensor(np.asarray(ref["pbc_box"]), dtype=torch.float64))
    else:
        inputs["batch"] = torch.as_tensor(ref["batch"])
    return inputs


def miss_bound(monkeypatch, path: str) -> None:
    """Make the table of filter ``path`` miss its bound when tables are built (it keeps its
    exact filter, with a warning)."""
    import fastnnp.models.common.radial_table as rt

    tabulate = rt.tabulate

    def missing(radial_filter, bound):
        table = tabulate(radial_filter, bound)
        if radial_filter.path == path:
            table.bound = 1.0
        return table

    monkeypatch.setattr(rt, "tabulate", missing)
