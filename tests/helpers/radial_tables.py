"""A checkpoint's float32 radial tables (``radial="auto"``) against its exact filters, both
evaluated in float64 so that only the tables' error shows: energy within 1e-7 relative, forces
within 1e-6 of the largest force; and every filter either tabulated within its bound or named
in a warning.

"Evaluated in float64" keeps the tables' coefficients as they are built (in float64, to the
float32 bound), not rounded to float32: rounding alone moves a float32 filter's values by 2^-24
relative, as it does any float32 weight, and measured on an ET variant (distance_influence keys,
ssp, tanh) that moves the energy by 1.1e-7 relative whatever the table; the unrounded tables
differ from the exact filters there by 1.9e-9. The float32 model's tables are checked to be
these same tables (names, pieces, bounds).
"""

import warnings

import numpy as np
import torch

import fastnnp
from fastnnp.models.common.radial_table import BOUNDS, attach_radial_tables, radial_tables

ENERGY_TOLERANCE = 1e-7  # relative (to max(1, |E|))
FORCE_TOLERANCE = 1e-6  # relative to the largest exact force


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


def assert_tables_match_exact(path, inputs: dict) -> list[str]:
    """The float32 model's tables of ``path``, evaluated in float64 (coefficients as built), against
    the exact float64 model on ``inputs`` (float64). Returns the names of the tables used."""
    tabled32, _ = load_tabled(path)
    tabled = fastnnp.load_model(path, dtype=torch.float64, radial="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the same misses load_tabled checked
        attach_radial_tables(tabled.representation_model, torch.float64, "table", bound=BOUNDS[torch.float32])
    built = [(t.name, t.pieces, t.bound) for t in radial_tables(tabled)]
    used = [(t.name, t.pieces, t.bound) for t in radial_tables(tabled32)]
    assert built == used, (built, used)
    exact = fastnnp.load_model(path, dtype=torch.float64)
    assert radial_tables(exact) == []
    energy, forces = energy_forces(tabled, inputs)
    ref_energy, ref_forces = energy_forces(exact, inputs)
    assert ref_forces.abs().max() > 1e-3, "zero reference forces: weak test"
    energy_error = (energy - ref_energy).abs()
    tolerance = ENERGY_TOLERANCE * ref_energy.abs().clamp(min=1)
    assert (energy_error <= tolerance).all(), (energy_error, tolerance)
    force_error = (forces - ref_forces).abs().max()
    assert force_error <= FORCE_TOLERANCE * ref_forces.abs().max(), (force_error, ref_forces.abs().max())
    return [name for name, _, _ in used]


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


def variant_tables(request, tmp_path, model: str, overrides: dict, inputs_kind: str) -> tuple[dict, list[str]]:
    """(hyper-parameters, tables used) of a TorchMD-Net-built variant of ``model`` ("tn", "et",
    "gn") with ``overrides``, checked by :func:`assert_tables_match_exact` on float64
    ``inputs_kind`` ("molecules" or "periodic") inputs. Skips without TorchMD-Net."""
    from tests.helpers.variants import build_reference, make_hparams, molecules, periodic_cells, seed_of, write_checkpoint

    hp = make_hparams(model, **overrides)
    path = write_checkpoint(tmp_path / "model.ckpt", build_reference(hp, seed_of(request)).state_dict(), hp)
    inputs = molecules(torch.float64) if inputs_kind == "molecules" else periodic_cells(torch.float64)
    return hp, assert_tables_match_exact(path, inputs)


def shipped_tables(data_dir, architecture: str, prefix: str) -> list[str]:
    """Tables used by the shipped ``tests/data/<architecture>`` checkpoint, checked by
    :func:`assert_tables_match_exact` on its reference inputs (``prefix`` "" or "pbc_")."""
    inputs = reference_inputs(np.load(data_dir / architecture / "reference.npz"), prefix)
    return assert_tables_match_exact(data_dir / architecture / "model.ckpt", inputs)
