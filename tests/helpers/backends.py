"""The same model on the reference and the Triton backend, and a shipped checkpoint's parity on Triton."""

import numpy as np
import torch

import fastnnp
from fastnnp.models.factory import build_model
from tests.helpers.parity import assert_matches, evaluate_reference

# Small models of each architecture with a Triton backend (F = 16, two layers, cutoff 4 Å).
TINY = {
    "tensornet": dict(
        model="tensornet", embedding_dimension=16, num_layers=2, num_rbf=10, rbf_type="expnorm", trainable_rbf=False,
        activation="silu", cutoff_lower=0.0, cutoff_upper=4.0, max_z=10, equivariance_invariance_group="O(3)",
        output_model="Scalar", reduce_op="add", prior_model=None, precision=32,
    ),
    "et": dict(
        model="equivariant-transformer", embedding_dimension=16, num_layers=2, num_rbf=10, rbf_type="expnorm",
        trainable_rbf=False, activation="silu", attn_activation="silu", neighbor_embedding=True, num_heads=4,
        distance_influence="both", vector_cutoff=False, cutoff_lower=0.0, cutoff_upper=4.0, max_z=10,
        output_model="Scalar", reduce_op="add", prior_model=None, precision=32,
    ),
    "gn": dict(
        model="graph-network", embedding_dimension=16, num_layers=2, num_rbf=10, rbf_type="expnorm", trainable_rbf=False,
        activation="silu", cutoff_lower=0.0, cutoff_upper=4.0, max_z=10, aggr="add", neighbor_embedding=True,
        output_model="Scalar", reduce_op="add", prior_model=None, precision=32,
    ),
}


def reference_and_triton(hparams: dict, seed: int = 5):
    """(reference, triton): one random-weight model (TorchMD-Net's initialisation perturbed, so
    zero-initialised biases are not zero) on both backends, in eval mode, Triton's frozen."""
    torch.manual_seed(seed)
    reference = build_model(hparams)
    for p in reference.parameters():
        p.data += 0.1 * torch.randn_like(p)
    triton = build_model(hparams, backend="triton")
    triton.load_state_dict(reference.state_dict())
    return reference.eval(), triton.eval().requires_grad_(False)


def shipped_checkpoint_on_triton(data_dir, name: str, periodic: bool, radial: str):
    """tests/data/<name>/model.ckpt loaded on Triton with ``radial``, checked against
    TorchMD-Net's stored float32 outputs on the molecules or the periodic box; returns the model."""
    ref = np.load(data_dir / name / "reference.npz")
    model = fastnnp.load_model(data_dir / name / "model.ckpt", backend="triton", radial=radial)
    prefix = "pbc_" if periodic else ""
    energy, forces = evaluate_reference(model, ref, prefix, torch.float32)
    assert_matches(energy, forces, ref[f"{prefix}energy_f32"], ref[f"{prefix}forces_f32"], torch.float32)
    return model


def assert_compiled_matches_eager(energy, pos: torch.Tensor) -> None:
    """``torch.compile(energy, fullgraph=True, backend="aot_eager")`` gives eager's energy and,
    by autograd through the compiled backward, its forces (``energy``: positions -> [S])."""
    compiled = torch.compile(energy, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (compiled, energy):
        p = pos.clone().requires_grad_(True)
        e = fn(p)
        (g,) = torch.autograd.grad(e.sum(), p)
        results.append((e.detach(), g))
    assert results[1][1].abs().max() > 1e-3
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
