"""TensorNet representation against TorchMD-Net's pure-torch TensorNet, module by module."""

import pytest
import torch
from torchmdnet.models.tensornet import TensorNet as ReferenceTensorNet

from fastnnp.models.tensornet import atom_chunks, pair_ops
from fastnnp.models.tensornet import reference as tensornet
from fastnnp.models.tensornet.reference import TensorNet
from fastnnp.bench.torchmdnet_pure import PureTorch, pure_torch_tensornet

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _pair(dtype, seed, **options):
    torch.manual_seed(seed)
    args = dict(hidden_channels=16, num_layers=2, num_rbf=8, cutoff_upper=4.0, max_z=10, **options)
    with pure_torch_tensornet():
        reference = ReferenceTensorNet(static_shapes=False, dtype=dtype, **args).to(dtype)
    for p in reference.parameters():
        p.data += 0.1 * torch.randn_like(p)
    ours = TensorNet(dtype=dtype, **args)
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k != "distance.box"})
    return PureTorch(reference), ours


def _batch(dtype):
    torch.manual_seed(7)
    z = torch.randint(1, 10, (13,))
    pos = (torch.randn(13, 3) * 2).to(dtype)
    batch = torch.tensor([0] * 5 + [1] * 8)
    return z, pos, batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("budget", [None, 2000], ids=["stored", "recomputed"])
@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
@pytest.mark.parametrize("cutoff_lower", [0.0, 0.8])
@pytest.mark.parametrize("species_sums", [False, True], ids=["per-slot", "per-species"])
def test_features_and_gradients_match(dtype, budget, group, cutoff_lower, species_sums, monkeypatch):
    monkeypatch.setattr(tensornet, "SPECIES_SUM_FRACTION", 1e9 if species_sums else 0.0)
    monkeypatch.setattr(pair_ops, "CHUNK", 5)
    monkeypatch.setattr(atom_chunks, "ATOM_CHUNK", 4)
    reference, ours = _pair(dtype, 1, equivariance_invariance_group=group, cutoff_lower=cutoff_lower)
    ours.memory_budget = budget or ours.memory_budget
    z, pos, batch = _batch(dtype)
    q = torch.tensor([1.0, -2.0], dtype=dtype)
    pos_ref, pos_ours = pos.clone().requires_grad_(), pos.clone().requires_grad_()
    x_ref = reference(z, pos_ref, batch, q=q)[0]
    x_ours = ours(z, pos_ours, batch, q=q)[0]
    torch.testing.assert_close(x_ours, x_ref, **TOL[dtype])
    weights = torch.randn_like(x_ref)
    (g_ref,) = torch.autograd.grad((x_ref * weights).sum(), pos_ref)
    (g_ours,) = torch.autograd.grad((x_ours * weights).sum(), pos_ours)
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


@pytest.mark.parametrize("budget", [None, 2000], ids=["stored", "recomputed"])
@pytest.mark.parametrize("species_sums", [False, True], ids=["per-slot", "per-species"])
def test_force_loss_parameter_gradients_match(budget, species_sums, monkeypatch):
    """Double backward (training on forces) through the pair ops, stored or recomputed."""
    monkeypatch.setattr(tensornet, "SPECIES_SUM_FRACTION", 1e9 if species_sums else 0.0)
    dtype = torch.float64
    monkeypatch.setattr(atom_chunks, "ATOM_CHUNK", 4)
    reference, ours = _pair(dtype, 2)
    ours.memory_budget = budget or ours.memory_budget
    z, pos, batch = _batch(dtype)

    def force_loss(model):
        p = pos.clone().requires_grad_()
        x = model(z, p, batch)[0]
        (forces,) = torch.autograd.grad(x.pow(2).sum(), p, create_graph=True)
        return forces.pow(2).sum()

    grads_ref = torch.autograd.grad(force_loss(reference), list(reference.model.parameters()))
    grads_ours = torch.autograd.grad(force_loss(ours), list(ours.parameters()))
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])
