"""The memory estimate (:mod:`fastnnp.memory`): neighbour pairs from density and cutoff, and a
call that cannot fit refused up front with the estimate and what to do. "Free memory" is faked
(monkeypatched), nothing large is allocated."""

import numpy as np
import pytest
import torch
from ase import Atoms

import fastnnp
from fastnnp import memory
from fastnnp.calculator import FastNNPCalculator
from fastnnp.memory import CallTooLarge, check_fits, estimate_call_bytes, system_volumes
from fastnnp.neighbors import neighbor_list
from fastnnp.step import EnergyStep

GIB = 2**30


@pytest.fixture(scope="module")
def model(data_dir):
    return fastnnp.load_model(data_dir / "tensornet" / "model.ckpt", radial="exact")  # no tables to fit: faster


def free_memory(monkeypatch, gib: float) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(gib * GIB))


def dense_box(side: float = 15.0, per_axis: int = 22) -> tuple[np.ndarray, np.ndarray]:
    """The issue's case: 22^3 = 10 648 atoms on a grid in a ``side`` Å periodic box (2.9 atoms/Å³)."""
    grid = (np.stack(np.meshgrid(*[np.arange(per_axis)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * side / per_axis
    return grid, np.eye(3) * side


def test_pairs_follow_density_and_cutoff():
    """Random gas in a periodic box: the estimate is the mean count n ρ 4/3 π r³ the search finds."""
    rng = np.random.default_rng(0)
    n, side, cutoff = 2000, 30.0, 5.0
    pos = torch.as_tensor(rng.uniform(0, side, (n, 3)))
    box = torch.eye(3, dtype=torch.float64) * side
    found = neighbor_list(pos, torch.zeros(n, dtype=torch.long), cutoff, box=box).edge_index.shape[1]
    estimate = estimate_call_bytes([n], [side**3], True, cutoff, features=64)
    assert estimate.pairs == pytest.approx(found, rel=0.03)
    assert estimate.density == pytest.approx(n / side**3)
    assert estimate.pairs_per_atom == pytest.approx(estimate.pairs / n, rel=1e-4)


def test_open_systems_count_no_more_pairs_than_there_are():
    """An open cluster: its padded extent makes the count a lower bound, and at most n - 1 per atom."""
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 12.0, (500, 3))
    found = neighbor_list(torch.as_tensor(pos), torch.zeros(500, dtype=torch.long), 5.0).edge_index.shape[1]
    estimate = estimate_call_bytes([500], system_volumes([pos], None, 5.0), False, 5.0, features=64)
    assert 0.5 * found < estimate.pairs <= found
    tiny = estimate_call_bytes([3], system_volumes([pos[:3] * 0.01], None, 5.0), False, 5.0, features=64)
    assert tiny.pairs == 3 * 2


def test_bytes_scale_with_pairs_atoms_features_and_precision():
    pairs = 1000 * 0.1 * 4 / 3 * np.pi * 5.0**3  # water's density, 5 Å
    one = estimate_call_bytes([1000], [1e4], True, 5.0, features=64)
    assert one.pairs == int(pairs)
    assert one.bytes == pytest.approx(pairs * (64 * 64 + 64) + 1000 * 400 * 64, abs=1)
    assert estimate_call_bytes([1000], [1e4], True, 5.0, features=64, itemsize=8).bytes == pytest.approx(
        pairs * (2 * 64 * 64 + 64) + 1000 * 800 * 64, abs=1)
    triton = estimate_call_bytes([1000], [1e4], True, 5.0, features=64, path="triton")
    assert triton.bytes == pytest.approx(pairs * 16 + 1000 * 72 * 64, abs=1)
    with pytest.raises(ValueError, match="unknown path 'jax'; choose one of torch, triton"):
        estimate_call_bytes([1], [1.0], True, 5.0, 64, path="jax")


def test_a_call_that_cannot_fit_is_refused_with_the_estimate_and_what_to_do(monkeypatch):
    free_memory(monkeypatch, 2.0)
    estimate = estimate_call_bytes([100_000], [1e6], True, 5.0, features=128)  # water: 0.1 atoms/Å³
    with pytest.raises(CallTooLarge) as refused:
        check_fits(estimate, torch.device("cpu"), 100_000, 5.0)
    message = str(refused.value)
    assert message.startswith(f"this call needs at least {estimate.bytes / GIB:.1f} GiB but cpu has 2.0 GiB free: "
                              f"100000 atoms with about {estimate.pairs:,} neighbour pairs within 5 Å (52 per atom at "
                              "0.100 atoms/Å³). Split the systems into smaller calls")
    assert "denser than any matter" not in message
    assert isinstance(refused.value, MemoryError)
    free_memory(monkeypatch, 1000.0)
    check_fits(estimate, torch.device("cpu"), 100_000, 5.0)
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: nothing is refused
    check_fits(estimate, torch.device("cpu"), 100_000, 5.0)


def test_free_memory_of_cpu_and_cuda(monkeypatch):
    psutil = pytest.importorskip("psutil")
    assert 0 < memory.available_bytes(torch.device("cpu")) <= psutil.virtual_memory().total
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: GIB)
    assert memory.available_bytes(torch.device("cuda:0")) == 4 * GIB  # free + torch's cached, unused blocks
    assert memory.available_bytes(torch.device("meta")) is None


def test_the_issues_dense_box_is_refused_by_the_calculator_before_the_model_runs(model, monkeypatch):
    """10 648 atoms in a 15 Å box: ~1 200 neighbours per atom. Before, ~3 minutes and then a crash in
    torch's allocator; now refused at once, saying the density is not that of matter."""
    free_memory(monkeypatch, 8.0)
    positions, cell = dense_box()
    atoms = Atoms(numbers=np.full(len(positions), 8), positions=positions, cell=cell, pbc=True)

    def no_kernel(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(model.representation_model, "forward", no_kernel)
    calculator = FastNNPCalculator(model)
    with pytest.raises(CallTooLarge, match=r"needs at least \d+\.\d GiB but cpu has 8\.0 GiB free: 10648 atoms with about "
                                           r"[\d,]+ neighbour pairs within 4\.5 Å \(1,2\d\d per atom at 3\.155 atoms/Å³\)\. "
                                           r"Split .*max_atoms=.*denser than any matter .water: 0\.10.: are the positions"):
        atoms.calc = calculator
        atoms.get_potential_energy()
    with pytest.raises(CallTooLarge, match="10648 atoms"):
        calculator.calculate_batch([atoms], progress=False)


def test_energy_step_refuses_and_small_calls_run(model, monkeypatch):
    free_memory(monkeypatch, 0.5)
    positions, cell = dense_box(per_axis=12, side=8.0)  # 1 728 atoms, 3.4 atoms/Å³
    z, pos = torch.full((len(positions),), 8), torch.as_tensor(positions, dtype=torch.float32)
    with pytest.raises(CallTooLarge, match="but cpu has 0.5 GiB free: 1728 atoms"):
        EnergyStep(model, z, pos, box=torch.as_tensor(cell, dtype=torch.float32))
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    water.calc = FastNNPCalculator(model)
    assert np.isfinite(water.get_potential_energy())  # a molecule needs kilobytes: never refused
