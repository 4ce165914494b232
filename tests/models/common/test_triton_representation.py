"""What every representation on the Triton backend shares (TensorNet, ET, GN): the backend's
refusals, named before any kernel runs, and the kernels' constants following new weights."""

import numpy as np
import pytest
import torch

import fastnnp
from fastnnp.bench.op_count import OpCounter
from fastnnp.kernels.common.search_plan import PlannedTableSearch
from fastnnp.models.factory import build_model
from fastnnp.step import EnergyStep
from tests.helpers.backends import TINY, assert_compiled_matches_eager, reference_and_triton
from tests.helpers.kernel_cases import random_system
from tests.helpers.parity import assert_matches

ARCHITECTURES = list(TINY)
# Registered ops a step of each architecture must call (forward and backward).
KERNEL_OPS = {
    "tensornet": {"embedding_messages", "interaction_messages", "interaction_messages_backward"},
    "et": {"cfconv", "cfconv_backward", "et_attention", "et_attention_backward"},
    "gn": {"cfconv", "cfconv_backward"},
}


@pytest.mark.parametrize("radial", ["table", "exact"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_step_makes_no_host_sync(data_dir, arch, radial):
    """A steady-state energy + forces step of the shipped checkpoint on the kernels issues no
    device->host sync and runs the architecture's kernels."""
    model = fastnnp.load_model(data_dir / arch / "model.ckpt", backend="triton", radial=radial)
    ref = np.load(data_dir / arch / "reference.npz")
    keep = torch.as_tensor(ref["batch"]) == 0
    z, pos = torch.as_tensor(ref["z"])[keep], torch.as_tensor(ref["pos"], dtype=torch.float32)[keep]
    step = EnergyStep(model, z, pos)
    step.run(pos)  # the first call plans the search (host syncs allowed)
    with OpCounter() as counter:
        step(pos)
    assert counter.syncs == []
    assert KERNEL_OPS[arch] | {"table_vectors", "table_vectors_backward"} <= set(counter.inputs)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_load_refuses_float64(data_dir, arch):
    with pytest.raises(ValueError, match="float32 only.*dtype=torch.float32"):
        fastnnp.load_model(data_dir / arch / "model.ckpt", backend="triton", dtype=torch.float64)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cpu_without_interpreter_is_refused(data_dir, arch, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        fastnnp.load_model(data_dir / arch / "model.ckpt", backend="triton")
    _, triton = reference_and_triton(TINY[arch])  # built under the interpreter, then run without it
    z, pos, batch, _ = random_system("open")
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        triton(z, pos, batch)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_float64_inputs_are_refused(arch):
    _, triton = reference_and_triton(TINY[arch])
    z, pos, batch, _ = random_system("open")
    with pytest.raises(ValueError, match="float32 only"):
        triton.representation_model(z, pos.double(), batch)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_trainable_parameters_are_refused(arch):
    _, triton = reference_and_triton(TINY[arch])
    triton.requires_grad_(True)
    z, pos, batch, _ = random_system("open")
    with pytest.raises(RuntimeError, match="parameters as constants"):
        triton(z, pos, batch)


@pytest.mark.parametrize("arch,key", [(a, "activation") for a in ARCHITECTURES] + [("et", "attn_activation")])
def test_activation_without_kernel_is_refused(arch, key):
    with pytest.raises(ValueError, match="activation Mish has no Triton kernel"):
        build_model({**TINY[arch], key: "mish"}, backend="triton")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_kernel_constants_follow_new_weights(arch):
    """The kernels' cached view of the parameters is reused while they do not change and
    rebuilt after an in-place edit under no_grad and after load_state_dict: the Triton model
    keeps matching the reference."""
    reference, triton = reference_and_triton(TINY[arch])
    representation = triton.representation_model
    z, pos, batch, _ = random_system("open", seed=2)
    triton(z, pos, batch)
    first = representation.kernel_constants()
    assert representation.kernel_constants() is first
    with torch.no_grad():
        for model in (reference, triton):
            for p in model.parameters():
                p.mul_(1.1)
    assert_matches(*triton(z, pos, batch), *reference(z, pos, batch), torch.float32)
    assert representation.kernel_constants() is not first
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(-1.0)
    triton.load_state_dict(reference.state_dict())
    assert_matches(*triton(z, pos, batch), *reference(z, pos, batch), torch.float32)


@pytest.mark.parametrize("kind", ["open", "periodic", "batched"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bin_sorted_numbering_gives_the_given_order_results(arch, kind):
    """With the search's tables numbered in the bin-sorted order (forced here; by default for
    systems of SORT_MIN_ATOMS atoms or more) the kernels run on the sorted atoms and the outputs
    come back in the given order: the reference path's per-atom features, energies and forces
    (the atoms of each system shuffled, so that the bin order is not the given one)."""
    reference, triton = reference_and_triton(TINY[arch])
    representation = triton.representation_model
    representation.table_search = PlannedTableSearch(sort_atoms=True)
    z, pos, batch, box = random_system(kind, seed=3)
    if box is not None:  # the cell grown to two bins per axis at the 4 Å cutoff
        pos, box = 1.3 * pos, 1.3 * box
    shuffle = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(0))
    shuffle = shuffle[batch[shuffle].argsort(stable=True)]
    z, pos, batch = z[shuffle], pos[shuffle], batch[shuffle]
    energy, forces = triton(z, pos, batch, box=box)
    table = representation.table_search(pos, batch, representation.cutoff_upper, representation.cutoff_lower, box=box)
    n = pos.shape[0]
    assert not torch.equal(table.order, torch.arange(n)), "the bin order is the given one: weak test"
    torch.testing.assert_close(table.inverse[table.order], torch.arange(n), rtol=0, atol=0)
    assert torch.equal(batch[table.order], batch.sort().values)  # systems stay contiguous, in order
    assert_matches(energy, forces, *reference(z, pos, batch, box=box), torch.float32)
    features = representation(z, pos, batch, box=box)[0]
    expected = reference.representation_model(z, pos, batch, box=box)[0]
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_bin_sorted_step_makes_no_host_sync_and_compiles():
    """The sorted numbering keeps a steady-state step free of host syncs, and
    torch.compile(fullgraph=True) of the energy traces it (forces by the compiled backward)."""
    _, triton = reference_and_triton(TINY["tensornet"])
    triton.representation_model.table_search = PlannedTableSearch(sort_atoms=True)
    z, pos, batch, box = random_system("periodic", seed=3)
    pos, box = 1.3 * pos, 1.3 * box
    step = EnergyStep(triton, z, pos, batch, box)
    step.run(pos, box)
    with OpCounter() as counter:
        step(pos, box)
    assert counter.syncs == []
    assert_compiled_matches_eager(lambda p: triton.checked_energy_terms(z, p, batch, box, None, 1, None)[0], pos)
