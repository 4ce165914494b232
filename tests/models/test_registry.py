"""The (architecture, backend) registry and the activation table: what serves which checkpoint,
and the reasons users see when a backend cannot."""

import re

import pytest
import torch
from torch import nn

from fastnnp.models import registry
from fastnnp.models.common.activations import ACTIVATIONS, Swish, activation_class, kernel_code
from fastnnp.models.factory import build_model

TENSORNET = {"model": "tensornet", "activation": "silu"}
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _hparams(**changes) -> dict:
    hp = dict(
        model="tensornet", embedding_dimension=8, num_layers=1, num_rbf=4, rbf_type="expnorm", activation="silu",
        cutoff_lower=0.0, cutoff_upper=4.0, max_z=10, output_model="Scalar", equivariance_invariance_group="O(3)",
    )
    return {**hp, **changes}


@pytest.mark.parametrize("name", list(registry.ARCHITECTURES))
def test_every_entry_imports_and_has_a_reference(name):
    entry = registry.ARCHITECTURES[name]
    assert "torch" in entry.implementations
    for backend in entry.implementations:
        assert issubclass(registry.representation_class(name, backend), nn.Module)


@pytest.mark.parametrize("hparams,dtype,device,interpret,reason", [
    (TENSORNET, torch.float32, "cuda", False, None),
    (TENSORNET, torch.float32, "cpu", True, None),
    (TENSORNET, torch.float64, "cuda", False, "float32 only.*dtype=torch.float32"),
    (TENSORNET, torch.float32, "cpu", False, "^needs CUDA.*needs a CUDA device.*TRITON_INTERPRET=1"),
    ({**TENSORNET, "activation": "mish"}, torch.float32, "cuda", False, "activation Mish has no Triton kernel"),
])
def test_triton_says_why_it_cannot_serve(hparams, dtype, device, interpret, reason):
    got = registry.unsupported(hparams["model"], "triton", hparams, dtype, device, interpret)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert re.search(reason, got), got


def test_an_architecture_without_kernels_names_those_with(monkeypatch):
    entry = registry.ARCHITECTURES["graph-network"]
    monkeypatch.setitem(registry.ARCHITECTURES, "graph-network", entry._replace(
        implementations={"torch": entry.implementations["torch"]}))
    got = registry.unsupported("graph-network", "triton", {"model": "graph-network"}, torch.float32, "cuda", False)
    assert got == (
        "backend='triton' has kernels for TensorNet, the Equivariant Transformer, TensorNet2 only, not 'graph-network'; "
        "use backend='torch'"
    )


def test_unknown_backend_and_model():
    assert "unknown backend 'cuda'" in registry.unsupported("tensornet", "cuda", TENSORNET)
    with pytest.raises(ValueError, match="unknown model 'foo'; supported: tensornet, equivariant-transformer"):
        registry.architecture("foo")
    with pytest.raises(ValueError, match="TorchMD-T transformer.*is not supported"):
        registry.architecture("transformer")


@pytest.mark.parametrize("alias", ["tensornetv2_alt", "tensornet-nqe"])
def test_tensornet2_aliases(alias):
    assert registry.architecture(alias) is registry.architecture("tensornet2")
    # the aliases reach TensorNet2's Triton kernels too
    assert registry.unsupported(alias, "triton", {"model": alias}, torch.float32, "cuda", False) is None


@pytest.mark.parametrize("hparams,dtype,device,expected", [
    (TENSORNET, torch.float32, CUDA, "triton"),
    (TENSORNET, torch.float32, CPU, "torch"),
    (TENSORNET, torch.float64, CUDA, "torch"),
    ({**TENSORNET, "activation": "mish"}, torch.float32, CUDA, "torch"),
    ({"model": "equivariant-transformer", "activation": "silu"}, torch.float32, CUDA, "triton"),
    ({"model": "graph-network", "activation": "silu"}, torch.float32, CPU, "torch"),
])
def test_auto_picks_triton_only_where_it_serves(hparams, dtype, device, expected):
    assert registry.choose_backend("auto", hparams, dtype, device) == expected


def test_explicit_backend_that_cannot_serve_is_refused():
    with pytest.raises(ValueError, match="float32 only"):
        registry.choose_backend("triton", TENSORNET, torch.float64, CUDA)
    assert registry.choose_backend("torch", TENSORNET, torch.float64, CUDA) == "torch"


def test_a_new_triton_backend_is_one_registry_entry(monkeypatch):
    """An architecture gains a backend by one entry: build_model then builds that class."""
    entry = registry.ARCHITECTURES["tensornet"]
    implementations = {**entry.implementations,
                       "triton": registry.Implementation("fastnnp.models.tensornet.reference:TensorNet")}
    monkeypatch.setitem(registry.ARCHITECTURES, "tensornet", entry._replace(implementations=implementations))
    model = build_model(_hparams(activation="mish"), backend="triton")
    assert type(model.representation_model).__name__ == "TensorNet"


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_table(name):
    module = activation_class(name)()
    code = ACTIVATIONS[name].kernel_code
    if code is None:
        with pytest.raises(ValueError, match="has no Triton kernel"):
            kernel_code(module)
    else:
        assert kernel_code(module) == code


def test_swish_has_the_silu_kernel_only_at_beta_one():
    assert kernel_code(Swish(1.0)) == kernel_code(nn.SiLU())
    with pytest.raises(ValueError, match="Swish has no Triton kernel"):
        kernel_code(Swish(2.0))
