"""Port of TorchMD-Net's ``tests/test_priors.py`` and ``test_prior_d2.py``: Atomref on and off,
ZBL and Coulomb against their closed forms, D2, a Coulomb prior fed through ``extra_args``, and
several priors in one checkpoint (its ``priors.yaml``: ZBL, D2, Atomref). TorchMD-Net's priors
with the same arguments are the oracle; the closed forms are written out here. Not ported:
``Atomref(trainable=...)`` and ``LearnableAtomref`` (training flags; TorchMD-Net 3.1.0's
``create_model`` cannot even build a LearnableAtomref from ``prior_args``), pickling whole LNNP
modules (fastnnp refuses checkpoints that need unpickling), Psi4's D2 reference values (the
oracle is TorchMD-Net's D2)."""

import copy
import math
import re

import pytest
import torch
from torchmdnet import priors as tmn_priors

import fastnnp
from fastnnp import priors
from tests.helpers.variants import D2_ARGS, ZBL_ARGS, partial_charges, write_checkpoint
from tests.torchmdnet_port.oracle import (
    MODELS,
    assert_same_outputs,
    build_pair,
    example_batch,
    hparams,
    oracle_outputs,
)

BOHR_M = 5.29177210903e-11
KJ_PER_MOL_J = 1000.0 / 6.02214076e23


@pytest.mark.parametrize("enable", [True, False])
@pytest.mark.parametrize("model_name", MODELS)
def test_atomref(tmp_path, model_name, enable):
    """With Atomref the energy is the one without plus the per-system sum of the table's rows
    (nothing when disabled); both equal TorchMD-Net's."""
    hp = hparams(model_name, precision=64, prior_model=["Atomref"], prior_args=[{"max_z": 32, "enable": enable}])
    pair = build_pair(tmp_path, hp, seed=21 + enable)
    state = {k: v for k, v in pair.oracle.state_dict().items() if not k.startswith("prior_model")}
    bare = fastnnp.load_model(write_checkpoint(tmp_path / "bare.ckpt", state, dict(hp, prior_model=None, prior_args=[])))
    inputs = example_batch(dtype=torch.float64)
    with_atomref, without = pair.model(**inputs), bare(**inputs)
    table = pair.oracle.prior_model[0].atomref.weight.detach().squeeze(1)
    offset = torch.zeros(2, dtype=torch.float64).index_add_(0, inputs["batch"], table[inputs["z"]]).unsqueeze(1)
    assert offset.abs().max() > 1e-2, "a vanishing Atomref offset: weak test"
    expected = without[0] + offset if enable else without[0]
    torch.testing.assert_close(with_atomref[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(with_atomref[1], without[1], rtol=1e-12, atol=1e-12)
    assert_same_outputs(with_atomref, oracle_outputs(pair.oracle, inputs), torch.float64)


# four atoms as in upstream's ZBL and Coulomb tests: positions, atom types, type -> element
FOUR_ATOMS = [[1.0, 0.0, 0.0], [2.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, -1.0]]
FOUR_TYPES = [0, 1, 2, 1]


def zbl_energy(pos, elements, cutoff, energy_unit_j, length_unit_m) -> float:
    """ZBL repulsion summed over pairs in closed form: screening length 0.8854 a0 / (Z_i^0.23 +
    Z_j^0.23), the universal screening function, a cosine cutoff; kJ/mol from Coulomb's k_e."""
    k_e = 8.9875517923e9 * 1.602176634e-19 ** 2  # J m
    total = 0.0
    for i in range(len(pos)):
        for j in range(i):
            r = math.dist(pos[i], pos[j])
            x = r * length_unit_m / (0.8854 * BOHR_M / (elements[i] ** 0.23 + elements[j] ** 0.23))
            phi = (0.1818 * math.exp(-3.2 * x) + 0.5099 * math.exp(-0.9423 * x)
                   + 0.2802 * math.exp(-0.4029 * x) + 0.02817 * math.exp(-0.2016 * x))
            switch = 0.5 * (math.cos(math.pi * r / cutoff) + 1.0)
            total += switch * phi * k_e * elements[i] * elements[j] / (r * length_unit_m) / energy_unit_j
    return total


def test_zbl():
    """Positions in Bohr, energies in kJ/mol, cutoff 10 Bohr: the closed form, and TorchMD-Net's."""
    pos = torch.tensor(FOUR_ATOMS, dtype=torch.float32)
    types = torch.tensor(FOUR_TYPES)
    elements = [1, 6, 8]
    args = dict(cutoff_distance=10.0, max_num_neighbors=5, atomic_number=torch.tensor(elements, dtype=torch.int8),
                distance_scale=BOHR_M, energy_scale=KJ_PER_MOL_J)
    call = (torch.zeros(1, 1), types, pos, torch.zeros_like(types))
    ours = priors.ZBL(**args).post_reduce(*call)
    ref = tmn_priors.ZBL(**args).post_reduce(*call, None, {})
    expected = zbl_energy(FOUR_ATOMS, [elements[t] for t in FOUR_TYPES], 10.0, KJ_PER_MOL_J, BOHR_M)
    assert expected > 1.0
    torch.testing.assert_close(ours, ref.view(ours.shape), rtol=1e-6, atol=0.0)
    assert abs(ours.item() - expected) <= 1e-4 * expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coulomb(dtype):
    """Positions in nm, energies in kJ/mol, the switch from 0.9 to 1.3 nm: the closed form
    138.935 q_i q_j / r (kJ/mol nm), and TorchMD-Net's. The four atoms are squeezed so that three
    pairs lie below the switch (no energy), two inside it and one beyond."""
    pos = torch.tensor(FOUR_ATOMS, dtype=dtype) * torch.tensor([0.5, 0.8, 0.4], dtype=dtype)
    charges = torch.tensor([0.2, -0.1, 0.8, -0.9], dtype=dtype)
    types = torch.tensor(FOUR_TYPES)
    lower, upper = 0.9, 1.3
    args = dict(lower_switch_distance=lower, upper_switch_distance=upper, max_num_neighbors=5,
                distance_scale=1e-9, energy_scale=KJ_PER_MOL_J)
    call = (torch.zeros(1, 1, dtype=dtype), types, pos, torch.zeros_like(types))
    ours = priors.Coulomb(**args).post_reduce(*call, extra_args={"partial_charges": charges})
    ref = tmn_priors.Coulomb(**args).post_reduce(*call, extra_args={"partial_charges": charges})
    expected = 0.0
    p, q = pos.tolist(), charges.tolist()
    for i in range(4):
        for j in range(i):
            r = math.dist(p[i], p[j])
            switch = 0.5 - 0.5 * math.cos(math.pi * (min(max(r, lower), upper) - lower) / (upper - lower))
            expected += switch * 138.935 * q[i] * q[j] / r
    assert abs(expected) > 10.0
    torch.testing.assert_close(ours, ref.view(ours.shape), rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0.0)
    assert abs(ours.item() - expected) <= 1e-4 * abs(expected)


@pytest.mark.parametrize("precision", [32, 64])
def test_multiple_priors(tmp_path, precision):
    """Upstream's ``priors.yaml``: ZBL (cutoff 4, at most 50 neighbours), D2 (cutoff 10, 100),
    Atomref on an equivariant transformer, in that order; the loaded priors keep their
    arguments and the energies and forces are TorchMD-Net's."""
    zbl = dict(copy.deepcopy(ZBL_ARGS), cutoff_distance=4.0, max_num_neighbors=50)
    d2 = dict(copy.deepcopy(D2_ARGS), cutoff_distance=10.0, max_num_neighbors=100)
    hp = hparams("equivariant-transformer", precision=precision, prior_model=["ZBL", "D2", "Atomref"],
                 prior_args=[zbl, d2, {"max_z": 32}])
    pair = build_pair(tmp_path, hp, seed=precision)
    loaded = list(pair.model.prior_model)
    assert [type(p).__name__ for p in loaded] == ["ZBL", "D2", "Atomref"]
    assert (loaded[0].cutoff_distance, loaded[0].max_num_neighbors) == (4.0, 50)
    assert (loaded[1].cutoff_distance, loaded[1].max_num_neighbors) == (10.0, 100)
    dtype = {32: torch.float32, 64: torch.float64}[precision]
    inputs = example_batch(dtype=dtype, seed=5)
    assert_same_outputs(pair.model(**inputs), oracle_outputs(pair.oracle, inputs), dtype)


def test_coulomb_prior_in_a_model(tmp_path):
    """A Coulomb prior reads per-atom charges from ``extra_args``; without them fastnnp says so."""
    coulomb = dict(lower_switch_distance=0.09, upper_switch_distance=0.21, max_num_neighbors=64,
                   distance_scale=1e-10, energy_scale=1.602176634e-19)
    hp = hparams("graph-network", precision=64, prior_model=["Coulomb"], prior_args=[coulomb])
    pair = build_pair(tmp_path, hp, seed=8)
    inputs = example_batch(dtype=torch.float64)
    inputs["extra_args"] = {"partial_charges": partial_charges(len(inputs["z"]), torch.float64)}
    assert_same_outputs(pair.model(**inputs), oracle_outputs(pair.oracle, inputs), torch.float64)
    with pytest.raises(ValueError, match=re.escape("the Coulomb prior needs per-atom partial charges: pass extra_args={'partial_charges'")):
        pair.model(inputs["z"], inputs["pos"], inputs["batch"])


D2_SYSTEMS = {  # (atomic numbers, positions in Å, system of each atom): upstream test_prior_d2's kinds
    "lone-atom": ([2], [[0.0, 0.0, 0.0]], [0]),
    "dimer": ([1, 1], [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [0, 0]),
    "three-systems": ([1, 8, 1, 7, 7, 6, 1, 1, 1],
                      [[0.0, 0.0, 0.0], [0.1, 0.25, 0.3], [0.45, 0.5, 0.6], [1.0, 2.0, 3.0], [2.0, 1.0, 3.1],
                       [0.0, 0.0, 0.0], [1.1, 1.0, 0.0], [0.0, 0.9, 1.0], [1.0, 0.0, 1.2]],
                      [0, 0, 0, 1, 1, 2, 2, 2, 2]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", D2_SYSTEMS)
def test_d2(name, dtype):
    """Grimme's D2 dispersion in Hartree for Å positions (cutoff 10 Å), per system: TorchMD-Net's;
    a lone atom has none, every other system is bound."""
    z, pos, batch = (torch.tensor(v) for v in D2_SYSTEMS[name])
    pos = pos.to(dtype)
    args = dict(cutoff_distance=10.0, max_num_neighbors=128, atomic_number=list(range(100)),
                distance_scale=1e-10, energy_scale=4.35974e-18)
    n_systems = int(batch[-1]) + 1
    y = torch.zeros(n_systems, 1, dtype=dtype)
    ours = priors.D2(**args).post_reduce(y, z, pos, batch)
    ref = tmn_priors.D2(**args).post_reduce(y, z, pos, batch, None, {})
    torch.testing.assert_close(ours, ref.view(ours.shape), rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0.0)
    if name == "lone-atom":
        assert (ours == 0).all()
    else:
        assert (ours < 0).all()
