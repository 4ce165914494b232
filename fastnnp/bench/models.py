"""The benchmarked model: a built-in architecture preset with random weights, or a checkpoint.

A preset's weights are drawn once per run (seeded) and written as a TorchMD-Net checkpoint
(``hyper_parameters`` + ``state_dict`` with the Lightning ``model.`` prefix), so every
backend, fastnnp's and TorchMD-Net's, loads the very same file.
"""

from __future__ import annotations

import os

import torch

_TENSORNET = dict(
    model="tensornet", embedding_dimension=128, num_layers=2, num_rbf=32, rbf_type="expnorm",
    trainable_rbf=False, activation="silu", cutoff_lower=0.0, cutoff_upper=5.0, max_z=32,
    equivariance_invariance_group="O(3)", output_model="Scalar", reduce_op="add", prior_model=None,
    precision=32, derivative=True, atom_filter=-1, max_num_neighbors=128, static_shapes=False,
    box_vecs=None, aggr="add", neighbor_embedding=False, num_heads=8, distance_influence="both",
    attn_activation="silu", vector_cutoff=False, output_mlp_num_layers=0, remove_ref_energy=False,
)
PRESETS = {
    "tensornet-128": _TENSORNET,
    "tensornet-64": dict(_TENSORNET, embedding_dimension=64),
    # TorchMD-Net's ET-MD17 example: 6 layers, 32 expnorm functions, 8 heads, neighbour embedding.
    "et-128": dict(_TENSORNET, model="equivariant-transformer", num_layers=6, neighbor_embedding=True),
    # TorchMD_GN's defaults (SchNet-like): 6 layers, 50 expnorm functions, neighbour embedding, add.
    "gn-128": dict(_TENSORNET, model="graph-network", num_layers=6, num_rbf=50, neighbor_embedding=True),
    # TensorNet2 at AceFF-2.0's width: 16 charge channels per prediction, the Coulomb head in its
    # reaction-field form (open molecules and periodic boxes alike; cells >= 10 Å wide).
    "tensornet2-128": dict(
        _TENSORNET, model="tensornet2", q_dim=16, q_weights=[1.0, 1.0, 1.0], output_model="ScalarPlusWeightedCoulomb",
        coulomb_cutoff=5.0, coulomb_max_num_neighbors=128, repulsion=False,
    ),
}


def hyperparameters(model: str) -> dict:
    """The hyper-parameters of a preset name or of a checkpoint file (as TorchMD-Net stores them)."""
    if model in PRESETS:
        return dict(PRESETS[model])
    if not os.path.isfile(model):
        raise ValueError(f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint file")
    from ..checkpoint import read_checkpoint

    return dict(read_checkpoint(model).hparams)


def describe(hparams: dict) -> str:
    """One line: architecture, width, depth, radial basis, cutoff (Å)."""
    return (f"{hparams['model']} F={hparams['embedding_dimension']} L={hparams['num_layers']} "
            f"{hparams['num_rbf']} {hparams['rbf_type']} rbf, cutoff {hparams['cutoff_upper']} Å")


def write_preset_checkpoint(name: str, path: str, seed: int) -> str:
    """Draw the preset's weights (``torch.manual_seed(seed)``) and save them at ``path`` in
    TorchMD-Net's checkpoint format; returns ``path``."""
    from ..models.factory import build_model

    hparams = PRESETS[name]
    torch.manual_seed(seed)
    state = build_model(hparams).state_dict()
    state["representation_model.distance.box"] = torch.zeros(3, 3)  # TorchMD-Net's neighbour-list buffer
    torch.save({"hyper_parameters": dict(hparams), "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    return path
