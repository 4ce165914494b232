"""Radial tables: the polynomial, its bound, its slope, and when a table is used."""

import warnings

import pytest
import torch

import fastnnp
from fastnnp.models.common import radial_table as rt
from fastnnp.models.common.radial_table import RadialFilter, build_radial_table, radial_tables, tabulate
from fastnnp.models.tensornet.reference import TensorNet


def _filters(rbf_type="expnorm", cutoff_lower=0.0, hidden=16) -> list[RadialFilter]:
    torch.manual_seed(2)
    model = TensorNet(hidden_channels=hidden, num_layers=1, num_rbf=8, rbf_type=rbf_type, cutoff_lower=cutoff_lower,
                      cutoff_upper=4.0, max_z=10, dtype=torch.float64)
    for p in model.parameters():
        p.data += 0.3 * torch.randn_like(p)
    return model.radial_filters()


@pytest.mark.parametrize("rbf_type,cutoff_lower", [("expnorm", 0.0), ("gauss", 0.0), ("expnorm", 0.6)])
def test_bound_is_the_measured_error_and_falls_as_h4(rbf_type, cutoff_lower):
    f = _filters(rbf_type, cutoff_lower)[1]
    bounds = []
    for pieces in (128, 256):
        table = build_radial_table(f.fn, f.lower, f.upper, pieces, f.rate, f.path, f.zero_outside)
        d = torch.rand(20000, dtype=torch.float64) * (f.upper - f.lower) + f.lower
        exact = f.fn(d)
        error = ((table(d) - exact).abs().amax(0) / exact.abs().amax(0)).max()
        assert error <= table.bound * 1.5  # the check grid is 16 points per piece, these are random
        bounds.append(table.bound)
    assert 8 < bounds[0] / bounds[1] < 32  # cubic pieces: error ~ h^4


def test_value_and_slope_come_from_one_polynomial():
    f = _filters()[1]
    table = build_radial_table(f.fn, f.lower, f.upper, 64, f.rate, f.path, f.zero_outside)
    d = (torch.rand(500, dtype=torch.float64) * 3.9).requires_grad_()
    value, slope = table.value_and_slope(d.detach())
    torch.testing.assert_close(table(d), value, rtol=0, atol=0)
    weights = torch.randn_like(value)
    (grad,) = torch.autograd.grad((table(d) * weights).sum(), d)
    torch.testing.assert_close(grad, (slope * weights).sum(1), rtol=1e-12, atol=1e-12)
    # the slope is the polynomial's derivative: central differences inside the pieces
    eps = 1e-6
    plus, _ = table.value_and_slope(d.detach() + eps)
    minus, _ = table.value_and_slope(d.detach() - eps)
    torch.testing.assert_close((plus - minus) / (2 * eps), slope, rtol=1e-5, atol=1e-6)


def test_table_is_continuous_with_continuous_slope_across_knots():
    f = _filters()[1]
    table = build_radial_table(f.fn, f.lower, f.upper, 32, f.rate, f.path, f.zero_outside)
    knots = table.distance(torch.arange(1, 32, dtype=torch.float64))
    below = table.value_and_slope(torch.nextafter(knots, torch.zeros_like(knots)))
    above = table.value_and_slope(torch.nextafter(knots, torch.full_like(knots, 10.0)))
    for a, b in zip(below, above, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_filters_with_the_cutoff_are_zero_outside():
    f = _filters(cutoff_lower=0.6)[0]
    table = build_radial_table(f.fn, f.lower, f.upper, 64, f.rate, f.path, f.zero_outside)
    d = torch.tensor([0.0, 0.3, 0.6, 4.0, 5.0], dtype=torch.float64)
    value, slope = table.value_and_slope(d)
    assert value.abs().max() == 0 and slope.abs().max() == 0
    torch.testing.assert_close(f.fn(d), value, rtol=0, atol=0)


@pytest.mark.parametrize("cutoff_lower", [0.0, 0.6])
def test_the_self_loop_value_is_the_exact_filter_at_zero(cutoff_lower):
    """``at_zero`` (the self loop's filter) is ``fn(0)`` exactly, 0 below a lower cutoff, and follows ``.to``."""
    for f in _filters(cutoff_lower=cutoff_lower):
        table = build_radial_table(f.fn, f.lower, f.upper, 16, f.rate, f.path, f.zero_outside)
        exact = f.fn(torch.zeros(1, dtype=torch.float64))[0]
        assert exact.abs().max() > 0 if cutoff_lower == 0 else exact.abs().max() == 0
        assert torch.equal(table.at_zero, exact)
        assert torch.equal(table.to(torch.float32).at_zero, exact.float())


def test_tabulate_finds_enough_pieces_or_returns_the_largest(monkeypatch):
    f = _filters()[1]
    table = tabulate(f, 1e-8)
    assert table.bound <= 1e-8 and table.pieces & (table.pieces - 1) == 0
    monkeypatch.setattr(rt, "MAX_PIECES", rt.FIRST_PIECES)
    assert tabulate(f, 1e-30).pieces == rt.FIRST_PIECES


def test_shipped_tensornet_gets_tables_in_float32_only(data_dir):
    path = data_dir / "tensornet" / "model.ckpt"
    tables = radial_tables(fastnnp.load_model(path))
    assert len(tables) == 3 and all(t.bound <= 1e-8 for t in tables)
    assert radial_tables(fastnnp.load_model(path, dtype=torch.float64)) == []
    assert radial_tables(fastnnp.load_model(path, radial="exact")) == []
    assert len(radial_tables(fastnnp.load_model(path, dtype=torch.float64, radial="table"))) == 3


def test_tables_leave_the_state_dict_alone(data_dir):
    path = data_dir / "tensornet" / "model.ckpt"
    exact, tabled = fastnnp.load_model(path, radial="exact"), fastnnp.load_model(path)
    assert exact.state_dict().keys() == tabled.state_dict().keys()


def test_a_table_that_misses_its_bound_is_not_used(data_dir, monkeypatch):
    monkeypatch.setitem(rt.BOUNDS, torch.float32, 1e-30)
    monkeypatch.setattr(rt, "MAX_PIECES", rt.FIRST_PIECES)
    with pytest.warns(UserWarning, match=r"radial filter layers\.0: a table of 512 pieces reaches a bound of .*exact"):
        model = fastnnp.load_model(data_dir / "tensornet" / "model.ckpt")
    assert radial_tables(model) == []


def test_unknown_radial_mode_is_an_error(data_dir):
    with pytest.raises(ValueError, match="unknown radial='fast'; choose one of auto, table, exact"):
        fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", radial="fast")


def test_calculator_passes_radial_through(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calc = fastnnp.FastNNPCalculator(data_dir / "tensornet" / "model.ckpt", radial="exact")
    assert radial_tables(calc.model) == []


def test_a_grouped_lookup_is_the_tables_channel_blocks():
    """Blocks equal to the full lookup's; gradients of blocks used apart (one unused) equal
    the full lookup's; the blocks follow a change of the coefficients."""
    f = _filters()[0]  # the embedding's filter: 3 F channels
    table = build_radial_table(f.fn, f.lower, f.upper, 64, f.rate, f.path, f.zero_outside)
    d = (torch.rand(300, dtype=torch.float64) * 4.2).requires_grad_()
    full = table(d)
    blocks = table.grouped(d, 3)
    for block, expected in zip(blocks, full.chunk(3, 1), strict=True):
        torch.testing.assert_close(block, expected, rtol=0, atol=0)
    weights = torch.randn_like(full)
    (grad,) = torch.autograd.grad((blocks[0] * weights[:, :16]).sum() + (blocks[2] * weights[:, 32:]).sum(), d)
    weights[:, 16:32] = 0
    (expected,) = torch.autograd.grad((table(d) * weights).sum(), d)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    table.coefficients = 2 * table.coefficients
    torch.testing.assert_close(table.grouped(d.detach(), 3)[1], 2 * full[:, 16:32].detach(), rtol=0, atol=0)


def test_a_stacked_table_is_its_tables_side_by_side():
    filters = _filters()
    tables = [build_radial_table(f.fn, f.lower, f.upper, 64, f.rate, f.path, f.zero_outside) for f in filters]
    stacked = rt.stacked_table(tables)
    d = (torch.rand(300, dtype=torch.float64) * 4.2).requires_grad_()
    values = stacked(d)
    torch.testing.assert_close(values, torch.cat([t(d) for t in tables], 1), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(values.sum(), d)
    (expected,) = torch.autograd.grad(sum(t(d).sum() for t in tables), d)
    torch.testing.assert_close(grad, expected)
    assert torch.equal(stacked.at_zero, torch.cat([t.at_zero for t in tables]))
    other = build_radial_table(filters[0].fn, filters[0].lower, filters[0].upper, 32, filters[0].rate, "other", True)
    assert rt.stacked_table([tables[0], other]) is None  # another grid
    assert rt.stacked_table([tables[0], None]) is None


@pytest.mark.parametrize("kind", ["open", "periodic", "batched"])
def test_tensornet_with_one_lookup_equals_one_lookup_per_filter(tmp_path, monkeypatch, kind):
    """The torch path looks all of TensorNet's tabulated filters up at once when they share a
    grid (the preset's do): the same energies and forces as one lookup per module."""
    from fastnnp.bench.models import write_preset_checkpoint
    from tests.helpers.kernel_cases import random_system
    from tests.helpers.parity import assert_matches

    model = fastnnp.load_model(write_preset_checkpoint("tensornet-64", str(tmp_path / "tn.ckpt"), seed=1))
    representation = model.representation_model
    z, pos, batch, box = random_system(kind, seed=4)
    stacked = model(z, pos, batch, box=box)
    assert representation._stacked[1] is not None and representation._stacked[1].channels == 3 * 3 * 64
    monkeypatch.setattr("fastnnp.models.tensornet.reference.stacked_table", lambda tables: None)
    representation._stacked = None
    separate = model(z, pos, batch, box=box)
    assert representation._stacked[1] is None
    assert_matches(*stacked, *separate, torch.float32)
    assert (stacked[1] - separate[1]).abs().max() < 1e-5 * stacked[1].abs().max()
