"""TensorNet2's optional in-model ZBL repulsion on its own neighbour pairs (``repulsion=True``),
with TorchMD-Net 3.1's ``RepulsionZBL`` semantics and buffers (``z_pow``, ``z_outer``,
``cutoff_ab``: persistent, so checkpoints carry the tables they were trained with).

Energies in eV, distances in Angstrom (the constants assume them)::

    E_i = 1/2 sum_j k_e Z_ij / r phi(r / a) f_c(r / r_ij),   a = 0.4543 a_0 / (Z_i^0.3 + Z_j^0.3)

with the universal screening phi, the covalent-radius sum r_ij as the cutoff of the
polynomial envelope f_c (p = 6); the tables are indexed (receiver, sender).
"""

import torch
from ase.data import covalent_radii
from torch import Tensor, nn

ANGSTROM_TO_BOHR = 1.8897261258369282
COULOMB_EV_ANGSTROM = 14.399645  # e^2 / (4 pi eps0) in eV Angstrom, TorchMD-Net's rounding
SCREENING_PREFACTOR = 0.4543
SCREENING_EXPONENT = 0.3
ENVELOPE_POWER = 6
# The universal screening function: (coefficient, exponent) pairs.
PHI_TERMS = ((0.1818, 3.2), (0.5099, 0.9423), (0.2802, 0.4029), (0.02817, 0.2016))


class RepulsionZBL(nn.Module):
    """Per-atom ZBL energies [N, 1] from a half pair list (each pair once)."""

    def __init__(self, max_z: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        n = min(max_z, len(covalent_radii))
        z = torch.arange(n, dtype=dtype)
        z[0] = 1  # index 0 is never an atom; keeps 0 ** 0.3 out of the table
        radii = torch.tensor(covalent_radii[:n], dtype=dtype)
        self.num_elem = n
        self.register_buffer("z_pow", z**SCREENING_EXPONENT)
        self.register_buffer("z_outer", torch.outer(z, z))
        self.register_buffer("cutoff_ab", radii[None] + radii[:, None])

    def directed(self, zi: Tensor, zj: Tensor, distance: Tensor) -> Tensor:
        """Energy k_e Z_ij / r phi f_c of the directed pairs i <- j [P] (distance > 0)."""
        screening = SCREENING_PREFACTOR / ANGSTROM_TO_BOHR / (self.z_pow[zi] + self.z_pow[zj])
        x = distance / screening
        phi = sum(c * torch.exp(-e * x) for c, e in PHI_TERMS)
        cutoff = self.cutoff_ab[zi, zj].to(distance.dtype)
        p = float(ENVELOPE_POWER)
        u = (distance / cutoff).clamp(max=1.0)
        envelope = 1.0 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
        envelope = envelope * (distance < cutoff)
        return COULOMB_EV_ANGSTROM * self.z_outer[zi, zj].to(distance.dtype) / distance * phi * envelope

    def forward(self, z: Tensor, first: Tensor, second: Tensor, distance: Tensor) -> Tensor:
        """``z`` [N]; the pairs ``first``, ``second`` [P] at ``distance`` [P] (> 0) -> [N, 1]."""
        zc = z.clamp(max=self.num_elem - 1)
        zi, zj = zc[first], zc[second]
        energy = distance.new_zeros(z.shape[0])
        energy = energy.index_add(0, first, 0.5 * self.directed(zi, zj, distance))
        energy = energy.index_add(0, second, 0.5 * self.directed(zj, zi, distance))
        return energy[:, None]
