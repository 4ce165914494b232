"""The whole potential: representation -> output head -> priors -> energy, and forces."""

from typing import Optional

import torch
from torch import Tensor, nn

from ..validation import check_inputs


class NeuralPotential(nn.Module):
    """``model(z, pos, batch=None, box=None, q=None) -> (energy [n_systems, 1], neg_dy [n_atoms, 3])``.

    Same contract and arithmetic order as TorchMD-Net's ``TorchMD_Net``: per-atom output ×
    ``std``, atom-wise priors, reduction per system, + ``mean``, post-reduction priors; with
    ``derivative`` the second output is minus the gradient of the summed energy with respect
    to ``pos`` (forces), else ``None``. Outputs carry an autograd graph only in training
    mode or when ``pos`` or ``box`` require grad (e.g. for stress); else they are detached. Units are the checkpoint's (TorchMD-Net models carry
    none). ``default_box`` [3, 3] (the checkpoint's ``box_vecs``) is the representation's box
    when none is given; priors, as in TorchMD-Net, only see the box passed in the call.
    """

    def __init__(
        self,
        representation_model: nn.Module,
        output_model: nn.Module,
        prior_model: Optional[list[nn.Module]] = None,
        derivative: bool = True,
        max_z: int = 100,
        dtype: torch.dtype = torch.float32,
        default_box: Optional[Tensor] = None,
    ):
        super().__init__()
        self.representation_model = representation_model
        self.output_model = output_model
        self.prior_model = nn.ModuleList(prior_model) if prior_model else None
        self.derivative = derivative
        self.max_z = max_z
        self.register_buffer("mean", torch.scalar_tensor(0, dtype=dtype))
        self.register_buffer("std", torch.scalar_tensor(1, dtype=dtype))
        self.register_buffer("default_box", default_box, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.std.dtype

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Optional[Tensor] = None,
        box: Optional[Tensor] = None,
        q: Optional[Tensor] = None,
        extra_args: Optional[dict[str, Tensor]] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        if batch is None:
            batch = torch.zeros(z.shape[0] if z.dim() else 0, dtype=torch.long, device=pos.device)
        n_systems = check_inputs(z, pos, batch, box, q, self.max_z, self.dtype)
        z, batch = z.long(), batch.long()
        if q is not None:
            q = q.reshape(n_systems).to(self.dtype)
        keep_graph = self.training or pos.requires_grad or (box is not None and box.requires_grad)
        if self.derivative and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        with torch.set_grad_enabled(self.derivative or torch.is_grad_enabled()):
            y = self._energy(z, pos, batch, box, q, extra_args, n_systems)
            if not self.derivative:
                return (y, None) if keep_graph else (y.detach(), None)
            (dy,) = torch.autograd.grad(y.sum(), pos, create_graph=keep_graph, allow_unused=True)
        neg_dy = torch.zeros_like(pos) if dy is None else -dy
        return (y, neg_dy) if keep_graph else (y.detach(), neg_dy)

    def _energy(self, z, pos, batch, box, q, extra_args, n_systems: int) -> Tensor:
        representation_box = self.default_box if box is None else box
        x, v = self.representation_model(z, pos, batch, box=representation_box, q=q)
        x = self.output_model.pre_reduce(x, v, z, pos, batch)
        x = x * self.std
        for prior in self.prior_model or ():
            x = prior.pre_reduce(x, z, pos, batch, extra_args)
        x = self.output_model.reduce(x, batch, n_systems)
        y = self.output_model.post_reduce(x + self.mean)
        for prior in self.prior_model or ():
            y = prior.post_reduce(y, z, pos, batch, box, extra_args)
        return y
