"""The ML-IAP unified model against the whole-box calculator, on domains built as LAMMPS builds them."""

import os
import pathlib
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from fastnnp import FastNNPCalculator
from fastnnp.lammps import FastNNPUnified, build_unified, load_unified, save_unified
from tests.helpers import DATA
from tests.lammps.emulator import ELEMENTS, KokkosData, PlainData, run_domains, run_exchanging_domains, split_domains
from tests.lammps.models import ARCHITECTURES, EXCHANGES, tiny_checkpoint, triclinic_box

RTOL = 1e-9
REPO = pathlib.Path(__file__).resolve().parents[2]


class Case(NamedTuple):
    architecture: str
    checkpoint: pathlib.Path
    unified: FastNNPUnified
    reference: dict  # the whole box's results (:func:`whole_box`)


@pytest.fixture(scope="module")
def box():
    return triclinic_box()


@pytest.fixture(scope="module")
def cases(tmp_path_factory, box):
    """Per architecture: its :class:`Case`."""
    built = {}
    for architecture in ARCHITECTURES:
        path = tiny_checkpoint(tmp_path_factory.mktemp(architecture), architecture)
        built[architecture] = Case(architecture, path, build_unified(path, ELEMENTS), whole_box(path, box))
    return built


@pytest.fixture(params=list(ARCHITECTURES))
def case(request, cases):
    return cases[request.param]


def whole_box(checkpoint, box) -> dict:
    """The float64 calculator's energy, forces, per-atom energies and virial (-stress × volume) of ``box``."""
    calculator = FastNNPCalculator(str(checkpoint), device="cpu", dtype=torch.float64)
    calculator.calculate(box.copy(), ["energy", "forces", "energies", "stress"])
    results = calculator.results
    return dict(energy=results["energy"], forces=results["forces"], energies=results["energies"],
                virial=-voigt_6_to_full_3x3_stress(results["stress"]) * box.get_volume())


def assert_matches_whole_box(totals, reference, unified, n_atoms):
    scale = np.abs(reference["forces"]).max()
    assert scale > 1e-3, "zero reference forces: weak test"
    assert totals.energy + unified.energy_offset == pytest.approx(reference["energy"], rel=RTOL)
    np.testing.assert_allclose(totals.atom_energies + unified.energy_offset / n_atoms, reference["energies"],
                               rtol=0, atol=RTOL * np.abs(reference["energies"]).max())
    np.testing.assert_allclose(totals.forces, reference["forces"], rtol=0, atol=RTOL * scale)
    virial_scale = np.abs(reference["virial"]).max()
    np.testing.assert_allclose(totals.virial, reference["virial"], rtol=0, atol=RTOL * virial_scale)
    np.testing.assert_allclose(totals.pair_virial, reference["virial"], rtol=0, atol=RTOL * virial_scale)


@pytest.mark.parametrize("grid", [(2, 1, 1), (2, 2, 1)], ids=["2", "4"])
def test_ghost_shell_domains_match_whole_box(case, box, grid):
    """Two and four domains of the plain coupling, owned + ghost atoms within hops × cutoff, ghost
    neighbour lists: summed energies, per-atom energies, assembled forces and the f·r virial
    equal the calculator's (energy + the model's mean, per-atom energies + mean / N, virial =
    -stress × volume)."""
    unified, reference = case.unified, case.reference
    assert unified.hops == 2 and unified.ghost_cutoff == pytest.approx(5.0)
    domains = split_domains(box, grid, unified.cutoff, unified.ghost_cutoff, ghost_lists=True)
    assert len(domains) == np.prod(grid)
    assert all(len(d.owner) > 4 * d.nlocal for d in domains)  # mostly ghosts
    assert sorted(np.concatenate([d.owner[: d.nlocal] for d in domains])) == list(range(len(box)))
    totals = run_domains(unified, box, domains, PlainData)
    assert_matches_whole_box(totals, reference, unified, len(box))


@pytest.mark.parametrize("grid", [(1, 1, 1), (2, 1, 1), (2, 2, 1)], ids=["1", "2", "4"])
def test_exchanging_domains_match_whole_box(case, box, grid):
    """The KOKKOS coupling with forward_exchange: one cutoff of ghosts, no ghost lists, domains
    run side by side exchanging ghost features after every message-passing module (one domain:
    its own periodic images): the same totals as the whole box."""
    architecture, unified, reference = case.architecture, case.unified, case.reference
    domains = split_domains(box, grid, unified.cutoff, unified.cutoff, ghost_lists=False)
    assert all((d.pair_i < d.nlocal).all() for d in domains)
    totals = run_exchanging_domains(unified, box, domains)
    assert_matches_whole_box(totals, reference, unified, len(box))
    expected = EXCHANGES[architecture]
    assert [(d.forward_calls, d.reverse_calls) for d in totals.data] == [(expected, expected)] * len(domains)


def test_thin_ghost_shell_is_wrong(case, box):
    """A ghost shell of one cutoff is not enough for a two-hop model: the test would notice."""
    unified, reference = case.unified, case.reference
    domains = split_domains(box, (2, 1, 1), unified.cutoff, unified.cutoff, ghost_lists=True)
    totals = run_domains(unified, box, domains, PlainData)
    assert np.abs(totals.forces - reference["forces"]).max() > 1e-6 * np.abs(reference["forces"]).max()


def test_no_ghost_lists_refused(case, box):
    unified = case.unified
    domains = split_domains(box, (2, 1, 1), unified.cutoff, unified.ghost_cutoff, ghost_lists=False)
    with pytest.raises(RuntimeError, match=r"passes messages over 2 hops of 2.5: .*'pair_style mliap unified <file> 1' "
                                           r"and 'comm_modify cutoff 5\+skin'"):
        run_domains(unified, box, domains, PlainData)


def test_kokkos_without_exchange_refused(case, box):
    """The KOKKOS coupling before forward_exchange builds no ghost lists: a two-hop model is refused."""
    unified = case.unified
    domains = split_domains(box, (2, 1, 1), unified.cutoff, unified.ghost_cutoff, ghost_lists=False)
    with pytest.raises(RuntimeError, match=r"KOKKOS ML-IAP coupling has no forward_exchange .* run without KOKKOS"):
        run_domains(unified, box, domains, KokkosData)


def test_saved_models_in_fresh_process(cases, box, tmp_path):
    """torch.save -> torch.load(path) in a new interpreter, as LAMMPS's coupling loads it:
    bit-identical forces and energies (all three architectures in one process)."""
    domain = split_domains(box, (2, 1, 1), 2.5, 5.0, ghost_lists=True)[0]
    np.savez(tmp_path / "domain.npz", **vars(domain))
    expected = {}
    for architecture, unified in ((a, c.unified) for a, c in cases.items()):
        save_unified(unified, tmp_path / f"{architecture}.pt")
        loaded = load_unified(tmp_path / f"{architecture}.pt")
        assert isinstance(loaded, FastNNPUnified) and loaded.element_types == ELEMENTS
        data = PlainData(domain)
        unified.compute_forces(data)
        assert np.abs(data.f).max() > 1e-3
        expected[architecture] = data
    script = f"""
import numpy as np, torch
from tests.lammps.emulator import Domain, PlainData
domain = Domain(**dict(np.load({str(tmp_path / 'domain.npz')!r})))
domain.nlocal = int(domain.nlocal)
for name in {list(cases)!r}:
    model = torch.load({str(tmp_path)!r} + f"/{{name}}.pt")  # as LAMMPS's plain coupling loads it
    data = PlainData(domain)
    model.compute_forces(data)
    np.savez({str(tmp_path)!r} + f"/{{name}}-out.npz", f=data.f, e=data.eatoms_value, energy=data.energy_value)
"""
    # the plain coupling's torch.load(path) needs full unpickling (README: this variable)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(REPO), timeout=300, env=env)
    for architecture, data in expected.items():
        fresh = np.load(tmp_path / f"{architecture}-out.npz")
        assert float(fresh["energy"]) == data.energy_value
        np.testing.assert_array_equal(fresh["f"], data.f)
        np.testing.assert_array_equal(fresh["e"], data.eatoms_value)


@pytest.mark.parametrize("architecture", ["tensornet", "et", "gn"])
def test_trained_checkpoints_on_exchanging_domains(architecture):
    """The trained checkpoints of tests/data (3 hops of 4.5 Å, F = 64) in float64 on two domains
    of a triclinic box, KOKKOS coupling with forward_exchange: the whole box's results."""
    path = DATA / architecture / "model.ckpt"
    unified = build_unified(path, ELEMENTS, dtype=torch.float64)
    assert unified.hops == 3
    box = triclinic_box(n_atoms=30, seed=5, scale=1.5)
    reference = whole_box(path, box)
    domains = split_domains(box, (2, 1, 1), unified.cutoff, unified.cutoff, ghost_lists=False)
    totals = run_exchanging_domains(unified, box, domains)
    assert_matches_whole_box(totals, reference, unified, len(box))


def test_atomref_prior_in_the_atom_energies(tmp_path, box):
    """An atom-wise prior (Atomref) is part of each atom's energy: still the whole box's results."""
    from tests.helpers.variants import priors_hparams

    path = tiny_checkpoint(tmp_path, "gn", **priors_hparams("Atomref"))
    unified = build_unified(path, ELEMENTS)
    (prior,) = unified.model.prior_model
    assert float(prior.atomref.weight[[1, 6, 7, 8]].abs().min()) > 1e-3
    domains = split_domains(box, (2, 1, 1), unified.cutoff, unified.cutoff, ghost_lists=False)
    totals = run_exchanging_domains(unified, box, domains)
    assert_matches_whole_box(totals, whole_box(path, box), unified, len(box))


def test_empty_domains_join_every_exchange(case, box):
    """A slab of atoms in vacuum cut into six domains: some own no atoms but hold ghosts, some
    hold nothing at all; all make the same exchanges, and the totals are the whole box's."""
    from ase import Atoms

    architecture, unified = case.architecture, case.unified
    cell = box.cell.array * np.array([[3.0], [1.0], [1.0]])  # a three times longer: vacuum beyond the atoms
    slab = Atoms(numbers=box.numbers, positions=box.positions, cell=cell, pbc=True)
    domains = split_domains(slab, (6, 1, 1), unified.cutoff, unified.cutoff, ghost_lists=False)
    assert any(len(d.owner) == 0 for d in domains) and any(d.nlocal == 0 < len(d.owner) for d in domains)
    totals = run_exchanging_domains(unified, slab, domains)
    assert_matches_whole_box(totals, whole_box(case.checkpoint, slab), unified, len(slab))
    expected = EXCHANGES[architecture]
    assert [(d.forward_calls, d.reverse_calls) for d in totals.data] == [(expected, expected)] * len(domains)
