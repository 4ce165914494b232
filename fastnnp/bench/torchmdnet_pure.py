"""TorchMD-Net 3.1's pure-torch TensorNet path: the numerical oracle of the tests and the
``torchmdnet-pure`` row of the benchmark (torchmdnet is imported only when these run).

TorchMD-Net's Warp kernels compute SO(3) TensorNet differently from its own pure-torch
code; the pure-torch code is the reference, so the Warp ops are switched off here.
"""

import contextlib
import warnings

import torch


def _import_tensornet_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchmdnet.models import tensornet
    return tensornet


@contextlib.contextmanager
def pure_torch_tensornet():
    """Build and run TorchMD-Net TensorNet models on its pure-torch path inside this block."""
    tn = _import_tensornet_module()
    names = ("OPT", "compose_tensor", "decompose_tensor", "tensor_matmul_o3", "tensor_matmul_so3")
    saved = {name: getattr(tn, name) for name in names}
    tn.OPT = False
    tn.compose_tensor = tn._compose_tensor
    tn.decompose_tensor = tn._decompose_tensor
    tn.tensor_matmul_o3 = tn._tensor_matmul_o3
    tn.tensor_matmul_so3 = tn._tensor_matmul_so3
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(tn, name, value)


def make_pure_torch(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every TorchMD-Net TensorNet submodule of ``model`` to the pure-torch path."""
    for module in model.modules():
        if hasattr(module, "opt"):
            module.opt = False
    return model


class PureTorch(torch.nn.Module):
    """Wraps a TorchMD-Net model so that every call runs on the pure-torch TensorNet path
    (the module-level op switches of ``pure_torch_tensornet`` hold only inside the block)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = make_pure_torch(model)

    def forward(self, *args, **kwargs):
        with pure_torch_tensornet():
            return self.model(*args, **kwargs)
