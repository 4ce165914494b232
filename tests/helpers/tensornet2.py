"""TensorNet2 checkpoints built with TorchMD-Net's own ``create_model`` on its pure-torch path,
and the inputs they are evaluated on (charged molecules, a periodic cell)."""

import contextlib
import copy
import warnings

import pytest
import torch

pytest.importorskip("torchmdnet")

from lightning_utilities.core.rank_zero import rank_zero_only  # noqa: E402
from torchmdnet.models import model as tmn_model  # noqa: E402

from fastnnp.bench.torchmdnet_pure import make_pure_torch, pure_torch_tensornet  # noqa: E402
from tests.helpers.variants import make_hparams, perturb_  # noqa: E402

Q_DIM = 3
# One weight per prediction (embedding + 2 layers); the middle one per channel.
Q_WEIGHTS = [1.0, [0.5, 1.5, 1.0], 2.0]
# Total charges of the three molecules of ``variants.molecules``.
TOTAL_CHARGES = (1.0, -2.0, 0.5)


@contextlib.contextmanager
def pure_torch_tensornet2():
    """TorchMD-Net's TensorNet and TensorNet2 modules on their pure-torch ops inside this block
    (TensorNet2 binds the Warp ops at import, so its own names are switched too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchmdnet.models import tensornet as tn, tensornet2 as tn2
    names = {"OPT": False, "compose_tensor": tn._compose_tensor, "decompose_tensor": tn._decompose_tensor,
             "tensor_matmul_o3": tn._tensor_matmul_o3, "tensor_matmul_so3": tn._tensor_matmul_so3}
    saved = {name: getattr(tn2, name) for name in names}
    for name, value in names.items():
        setattr(tn2, name, value)
    try:
        with pure_torch_tensornet():
            yield
    finally:
        for name, value in saved.items():
            setattr(tn2, name, value)


def tensornet2_hparams(**overrides) -> dict:
    """Small TensorNet2 hyper-parameters with the Coulomb head (all-to-all unless overridden)."""
    hp = make_hparams("tn", q_dim=Q_DIM, q_weights=copy.deepcopy(Q_WEIGHTS),
                      output_model="ScalarPlusWeightedCoulomb", coulomb_cutoff=None)
    hp.update(model="tensornet2", **overrides)
    return hp


def build_tensornet2(hp: dict, seed: int = 0) -> torch.nn.Module:
    """TorchMD-Net's TensorNet2 model for ``hp``, every parameter and buffer randomised, eval
    mode, pure-torch path."""
    if getattr(rank_zero_only, "rank", None) is None:
        rank_zero_only.rank = 0
    torch.manual_seed(seed)
    with pure_torch_tensornet2(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tmn_model.create_model(copy.deepcopy(hp))
    make_pure_torch(model)
    perturb_(model, seed + 1000)
    return model.eval()


def tensornet2_outputs(model, inputs: dict):
    """TorchMD-Net's (y, neg_dy) on the pure-torch path (pos cloned)."""
    kw = dict(inputs, pos=inputs["pos"].clone())
    with pure_torch_tensornet2(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, neg_dy = model(**kw)[:2]
    return y.detach(), neg_dy.detach()


def tensornet2_charges(model, inputs: dict) -> torch.Tensor:
    """The charge channels TorchMD-Net's representation appends to its features [N, C]."""
    rep = model.representation_model
    batch = inputs.get("batch")
    batch = torch.zeros_like(inputs["z"]) if batch is None else batch
    with pure_torch_tensornet2(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        x = rep(inputs["z"], inputs["pos"], batch, box=inputs.get("box"), q=inputs.get("q"))[0]
    return x[:, rep.hidden_channels:]
