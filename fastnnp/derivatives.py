"""Energy with its position and strain derivatives in one backward pass."""

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .models.potential import NeuralPotential


class EnergyDerivatives(NamedTuple):
    """Model units: energy [S, 1], atom_energy [N] (None where the model has no per-atom
    split), forces = -dE/dpos [N, 3], stress = (dE/dε) / volume [S, 3, 3] for a symmetric
    strain ε of positions and cell (energy per length³; None without a box)."""

    energy: Tensor
    atom_energy: Optional[Tensor]
    forces: Tensor
    stress: Optional[Tensor]


def energy_derivatives(
    model: NeuralPotential,
    z: Tensor,
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor] = None,
    q: Optional[Tensor] = None,
    create_graph: bool = False,
) -> EnergyDerivatives:
    """Energy, forces and (with ``box`` [S, 3, 3]) the stress of ``model``.

    Positions and cells are strained as ``x (1 + ε)`` with ``ε`` symmetric and zero, so one
    gradient gives both derivatives. ``create_graph`` keeps the graph for training on forces
    and stress; otherwise the results are detached.
    """
    return strained_derivatives(lambda p, b: model.energy_terms(z, p, batch, b, q), pos, batch, box, create_graph)


def strained_derivatives(
    energy_terms: Callable[[Tensor, Optional[Tensor]], tuple[Tensor, Optional[Tensor]]],
    pos: Tensor,
    batch: Tensor,
    box: Optional[Tensor] = None,
    create_graph: bool = False,
    stress: bool = True,
) -> EnergyDerivatives:
    """:func:`energy_derivatives` of ``energy_terms(pos, box) -> (energy [S, 1], atom energy
    [N] or None)``, a model's energy at strained positions and cell; ``batch`` [N] int64.
    ``stress=False`` skips the strain (stress None, the energy and forces unchanged)."""
    stress = stress and box is not None
    with torch.enable_grad():
        pos = pos.detach().requires_grad_(True)
        inputs = [pos]
        strained_pos, strained_box = pos, box
        if stress:
            strain = torch.zeros_like(box, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(-2, -1))
            if box.dim() == 2:
                strained_pos = pos + pos @ symmetric
            else:
                strained_pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch])
            strained_box = box + box @ symmetric
            inputs.append(strain)
        energy, atom_energy = energy_terms(strained_pos, strained_box)
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
    forces = -grads[0] if grads[0] is not None else torch.zeros_like(pos)
    stress_tensor = None
    if stress:
        strain_derivative = grads[1] if grads[1] is not None else torch.zeros_like(box)
        # |a . (b x c)|: no factorisation, whose error check would sync on a GPU
        volume = (box[..., 0, :] * torch.linalg.cross(box[..., 1, :], box[..., 2, :])).sum(-1).abs().detach()
        stress_tensor = strain_derivative / (volume if box.dim() == 2 else volume[:, None, None])
        stress_tensor = stress_tensor.reshape(-1, 3, 3)
    if not create_graph:
        energy = energy.detach()
        atom_energy = None if atom_energy is None else atom_energy.detach()
    return EnergyDerivatives(energy, atom_energy, forces, stress_tensor)
