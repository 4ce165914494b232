"""TensorNet2 end to end on the Triton kernels (CPU interpreter): checkpoints built with
TorchMD-Net's ``create_model`` loaded with ``backend="triton"`` against TorchMD-Net's pure-torch
outputs and against fastnnp's reference path (energies, forces, the predicted charges and their
sums, stress), with the embedding's exact filter and its radial table; and the refusals."""

import warnings

import pytest
import torch

import fastnnp

pytest.importorskip("torchmdnet")

from fastnnp.models.tensornet2.triton import TritonTensorNet2  # noqa: E402
from fastnnp.models.common.radial_table import radial_tables  # noqa: E402
from tests.helpers.backends import assert_compiled_matches_eager  # noqa: E402
from tests.helpers.parity import assert_matches  # noqa: E402
from tests.helpers.tensornet2 import build_tensornet2, tensornet2_hparams, tensornet2_outputs  # noqa: E402
from tests.helpers.variants import check, fastnnp_outputs, molecules, periodic_cells, write_checkpoint  # noqa: E402

TINY = dict(embedding_dimension=16, num_rbf=10)


def _inputs(kind: str) -> dict:
    """Two charged molecules (12 atoms) or two charged systems in a triclinic cell (14 atoms)."""
    if kind == "molecules":
        inputs = molecules(torch.float32, names=("CH3CH2OH", "H2O"))
        inputs["q"] = torch.tensor([1.0, -2.0])
    else:
        inputs = periodic_cells(torch.float32, sizes=(8, 6))
        inputs["q"] = torch.tensor([1.0, -1.0])
    return inputs


def _load(path, backend: str, radial: str = "auto"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fastnnp.load_model(path, backend=backend, radial=radial)


def _outputs(model, inputs: dict):
    """(energy, forces, dE/dbox or None) of one call."""
    if inputs.get("box") is None:
        return (*fastnnp_outputs(model, inputs), None)
    cell = inputs["box"].clone().requires_grad_()
    energy, forces = model(**dict(inputs, box=cell))[:2]
    return energy.detach(), forces.detach(), torch.autograd.grad(energy.sum(), cell)[0]


@pytest.mark.parametrize("kind,radial,overrides", [
    ("molecules", "exact", dict(repulsion=True)),
    ("molecules", "auto", dict(equivariance_invariance_group="SO(3)", cutoff_lower=0.6, rbf_type="gauss",
                               activation="ssp")),
    ("periodic", "auto", dict(coulomb_cutoff=4.5)),
], ids=["O3-repulsion-exact", "SO3-lower-gauss-ssp-table", "pbc-coulomb_cutoff-table"])
def test_matches_torchmdnet_and_reference_path(tmp_path, kind, radial, overrides):
    hp = tensornet2_hparams(**TINY, **overrides)
    tmn = build_tensornet2(hp, seed=11)
    path = write_checkpoint(tmp_path / "model.ckpt", tmn.state_dict(), hp)
    inputs = _inputs(kind)
    model = _load(path, "triton", radial)
    rep = model.representation_model
    assert type(rep) is TritonTensorNet2  # the registry's "triton" entry
    # "auto": a float32 table for the embedding only (the layers' filters read the charges)
    assert len(radial_tables(model)) == (0 if radial == "exact" else 1)
    *ours, stress = _outputs(model, inputs)
    check(ours, tensornet2_outputs(tmn, inputs), torch.float32)
    reference = _load(path, "torch")
    *expected, expected_stress = _outputs(reference, inputs)
    assert_matches(*ours, *expected, torch.float32)
    if kind == "periodic":  # dE/dbox (stress) through the table's vectors and the charges
        assert expected_stress.abs().max() > 1e-3
        torch.testing.assert_close(stress, expected_stress, rtol=1e-4, atol=1e-4)
    if hp.get("repulsion"):  # the ZBL term is exercised; the full model call reads and clears it
        assert rep.extra_energy is None
        rep(inputs["z"], inputs["pos"], inputs["batch"], q=inputs["q"])
        assert rep.extra_energy.abs().max() > 1e-3

    # the predictions' charges: the reference path's, and per system the total charge up to the
    # equilibration's eps: sums = Q - eps / (S + eps) (Q - raw sums), S the sum of squared weights
    args = (inputs["z"], inputs["pos"], inputs["batch"])
    raw = []
    hooks = [p.q_mlp.register_forward_hook(lambda m, a, out: raw.append(out.detach()))
             for p in (rep.charge_predict_0, *rep.charge_predicts)]
    charges = rep.predicted_charges(*args, q=inputs["q"])
    for hook in hooks:
        hook.remove()
    expected = reference.representation_model.predicted_charges(*args, q=inputs["q"])
    torch.testing.assert_close(charges, expected, atol=1e-5, rtol=1e-5)
    assert charges.std() > 0.05

    def per_system(values):
        return torch.zeros(2, values.shape[1]).index_add(0, inputs["batch"], values)

    q_dim, Q = hp["q_dim"], inputs["q"][:, None]
    raw_sums = per_system(torch.cat([r[:, :q_dim] for r in raw], 1))
    S = per_system(torch.cat([r[:, q_dim:] ** 2 for r in raw], 1))
    assert (Q - raw_sums).abs().mean() > 0.5, "raw charges already sum to Q: weak test"
    torch.testing.assert_close(per_system(charges), Q - 1e-6 / (S + 1e-6) * (Q - raw_sums), atol=1e-5, rtol=0)


def test_compiled_triton_path_matches_eager(tmp_path):
    """torch.compile(fullgraph=True, backend="aot_eager") of the energy (charges, Coulomb head and
    ZBL included): no graph break, so no host sync in the step; forces through the compiled backward."""
    hp = tensornet2_hparams(**TINY, repulsion=True)
    path = write_checkpoint(tmp_path / "model.ckpt", build_tensornet2(hp, seed=4).state_dict(), hp)
    model = _load(path, "triton")
    inputs = _inputs("molecules")
    model(**inputs)  # the eager call that plans the neighbour search

    def energy(p):
        return model.checked_energy_terms(inputs["z"], p, inputs["batch"], None, inputs["q"], 2, None)[0]

    assert_compiled_matches_eager(energy, inputs["pos"])


def test_refusals(tmp_path):
    hp = tensornet2_hparams(**TINY)
    path = write_checkpoint(tmp_path / "model.ckpt", build_tensornet2(hp, seed=2).state_dict(), hp)
    with pytest.raises(ValueError, match="backend='triton' runs float32 only.*dtype=torch.float32"):
        fastnnp.load_model(path, backend="triton", dtype=torch.float64)
    rep = _load(path, "triton").representation_model
    inputs = _inputs("molecules")
    args = (inputs["z"], inputs["pos"].double(), inputs["batch"])
    with pytest.raises(ValueError, match="runs float32 only, got torch.float64"):
        rep(*args)
    rep.requires_grad_(True)
    with pytest.raises(RuntimeError, match="treats the parameters as constants"):
        rep(inputs["z"], inputs["pos"], inputs["batch"])
    with pytest.raises(ValueError, match="precision must be one of"):
        TritonTensorNet2(hidden_channels=16, q_dim=2, num_layers=1, num_rbf=8, precision="bf16")


def test_bin_sorted_numbering_gives_the_given_order_results(tmp_path):
    """With tables in the bin-sorted order (forced; by default for large systems) the per-atom
    charges and ZBL energies come back in the given order: the reference path's."""
    from fastnnp.kernels.common.search_plan import PlannedTableSearch

    hp = tensornet2_hparams(**TINY, repulsion=True)
    path = write_checkpoint(tmp_path / "model.ckpt", build_tensornet2(hp, seed=6).state_dict(), hp)
    model, reference = _load(path, "triton"), _load(path, "torch")
    rep = model.representation_model
    rep.table_search = PlannedTableSearch(sort_atoms=True)
    inputs = _inputs("molecules")
    assert_matches(*fastnnp_outputs(model, inputs), *fastnnp_outputs(reference, inputs), torch.float32)
    args = (inputs["z"], inputs["pos"], inputs["batch"])
    table = rep.table_search(inputs["pos"], inputs["batch"], rep.cutoff_upper, rep.cutoff_lower)
    assert not torch.equal(table.order, torch.arange(len(inputs["z"]))), "the bin order is the given one: weak test"
    expected = reference.representation_model.predicted_charges(*args, q=inputs["q"])
    torch.testing.assert_close(rep.predicted_charges(*args, q=inputs["q"]), expected, atol=1e-5, rtol=1e-5)
    rep(*args, q=inputs["q"])
    reference.representation_model(*args, q=inputs["q"])
    zbl = reference.representation_model.extra_energy
    assert zbl.abs().max() > 1e-3
    torch.testing.assert_close(rep.extra_energy, zbl, atol=1e-5 * zbl.abs().max().item(), rtol=1e-4)
