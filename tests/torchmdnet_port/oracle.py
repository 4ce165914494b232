"""TorchMD-Net models as oracles: built with ``create_model`` from hyper-parameters, randomised,
written as a ``torchmd-train``-like checkpoint and loaded back with :func:`fastnnp.load_model`;
and the inputs TorchMD-Net's own tests use."""

import copy
import pathlib
import warnings
from typing import NamedTuple, Optional

import torch

import fastnnp
from fastnnp.bench.torchmdnet_pure import pure_torch_tensornet
from tests.helpers.parity import assert_matches
from tests.helpers.variants import build_reference, make_hparams, write_checkpoint

# TorchMD-Net 3.1.0's models that fastnnp runs (its fourth, the deprecated "transformer", is refused)
MODELS = ("tensornet", "equivariant-transformer", "graph-network")
# Widths small enough for a 2-core machine; everything else stays what the test asks for.
SMALL_WIDTHS = dict(embedding_dimension=16, num_layers=2, num_rbf=8, num_heads=2)
# the elements TorchMD-Net's create_example_batch draws from
EXAMPLE_ELEMENTS = (1, 6, 7, 8, 9)


class Pair(NamedTuple):
    """The same weights twice: TorchMD-Net's model (the oracle) and fastnnp's."""

    oracle: torch.nn.Module
    model: torch.nn.Module
    checkpoint: pathlib.Path


def hparams(model: str, **overrides) -> dict:
    """A full ``torchmd-train`` hyper-parameter dict for ``model`` (TorchMD-Net's name), small."""
    hp = make_hparams()
    hp.update(SMALL_WIDTHS, model=model, **overrides)
    return hp


def build_pair(tmp_path: pathlib.Path, hp: dict, seed: int = 0, **load_kwargs) -> Pair:
    """``hp`` built by TorchMD-Net (weights randomised with ``seed``), saved, loaded by fastnnp."""
    oracle = build_reference(hp, seed)
    path = write_checkpoint(tmp_path / f"{hp['model']}-{seed}.ckpt", oracle.state_dict(), copy.deepcopy(hp))
    return Pair(oracle, fastnnp.load_model(path, **load_kwargs), path)


def example_batch(n_atoms: int = 6, two_systems: bool = True, dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> dict:
    """TorchMD-Net's test batch: elements drawn from H, C, N, O, F, standard-normal positions
    (Å), the second half of the atoms a second system. Seeded; no two atoms closer than 0.5 Å."""
    g = torch.Generator().manual_seed(seed)
    while True:
        pos = torch.randn(n_atoms, 3, generator=g, dtype=torch.float64)
        if torch.pdist(pos).min() > 0.5:
            break
    z = torch.tensor(EXAMPLE_ELEMENTS)[torch.randint(0, len(EXAMPLE_ELEMENTS), (n_atoms,), generator=g)]
    batch = torch.zeros(n_atoms, dtype=torch.long)
    if two_systems:
        batch[n_atoms // 2:] = 1
    return dict(z=z, pos=pos.to(dtype), batch=batch)


def oracle_outputs(oracle: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """TorchMD-Net's (y, neg_dy), detached (pos cloned: its forward marks it in place); neg_dy
    None where TorchMD-Net returns its placeholder ``torch.empty(0)`` (no derivative)."""
    kw = dict(inputs, pos=inputs["pos"].clone())
    with pure_torch_tensornet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, neg_dy = oracle(**kw)[:2]
    return y.detach(), None if neg_dy is None or neg_dy.numel() == 0 else neg_dy.detach()


def assert_same_outputs(ours, ref, dtype: torch.dtype) -> None:
    """Same shapes and dtypes as TorchMD-Net's outputs, and the same numbers (1e-9 relative in
    float64, the acceptance bounds in float32); forces None exactly where TorchMD-Net has none (fastnnp's contract: None, not an empty tensor)."""
    (y, f), (ry, rf) = ours, ref
    assert y.shape == ry.shape and y.dtype == ry.dtype == dtype, (y.shape, y.dtype, ry.shape, ry.dtype)
    assert torch.isfinite(ry).all() and ry.abs().max() > 1e-6, "a zero or non-finite reference: weak test"
    if rf is None:
        assert f is None, "TorchMD-Net returns no forces here, fastnnp does"
        tol = (1e-9 if dtype == torch.float64 else 1e-5) * max(1.0, ry.abs().max().item())
        assert (y.detach() - ry).abs().max() <= tol, f"outputs differ by {(y.detach() - ry).abs().max():.3e}"
        return
    assert f is not None and f.shape == rf.shape and f.dtype == rf.dtype
    assert rf.abs().max() > 1e-4, "zero reference forces: weak test"
    assert_matches(y, f, ry, rf, dtype)
