"""What every representation on the Triton backend shares (TensorNet, ET, GN): the backend's
refusals, named before any kernel runs, and the kernels' constants following new weights."""

import numpy as np
import pytest
import torch

import fastnnp
from fastnnp.bench.op_count import OpCounter
from fastnnp.models.factory import build_model
from fastnnp.step import EnergyStep
from tests.helpers.backends import TINY, reference_and_triton
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
