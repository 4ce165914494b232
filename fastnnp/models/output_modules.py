"""Output heads with TorchMD-Net 3.1 semantics and state-dict names.

A head turns per-atom features into a per-system prediction in three steps, called by the
model in this order (with the std scaling and atom-wise priors between the first two, and
the mean shift and system-wise priors around the third)::

    per_atom = head.pre_reduce(x, v, z, pos, batch)    # [N, 1] (or [N, 3] for vector heads)
    per_sys  = head.reduce(per_atom, batch, n_systems)  # [S, ...] via scatter(reduce_op)
    y        = head.post_reduce(per_sys)

``reduce_op="mean"`` keeps TorchMD-Net's scatter quirk (sum / (count + 1)); see
:func:`fastnnp.models.common.scatter.scatter`.

Keys: MLP heads hold ``output_network.layers.{0,2,...}.{weight,bias}``; gated (equivariant)
heads hold ``output_network.{0,1}.{vec1_proj,vec2_proj}.weight`` and
``output_network.{0,1}.update_net.layers.{0,2}.{weight,bias}``; the dipole and spatial-extent
heads also hold the ``atomic_mass`` buffer, ``ScalarPlusWeightedCoulomb`` the ``qweights`` one.
"""

import re
from typing import Iterable, Optional, Sequence

import torch
from ase.data import atomic_masses_iupac2016
from torch import Tensor, nn

from fastnnp.models.common.mlp import MLP, GatedEquivariantBlock
from fastnnp.models.common.scatter import scatter
from fastnnp.neighbors import neighbor_list

_REDUCE_OPS = ("add", "sum", "mean", "max", "min")


def _atomic_mass_table(dtype: torch.dtype) -> Tensor:
    """Masses indexed by atomic number, index 0 = 1.0.

    TorchMD-Net's ``torchmdnet.utils.atomic_masses`` is the IUPAC 2013 standard atomic weights
    (Meija et al., Pure Appl. Chem. 88, 265 (2016); conventional weights for elements given as
    ranges, most stable isotope for elements without stable isotopes), 119 entries with a
    placeholder 1.0 at index 0. ASE's ``atomic_masses_iupac2016`` is the same table, value for
    value (checked in the tests). Like TorchMD-Net, it is built in float64 and cast to ``dtype``.
    """
    return torch.tensor(atomic_masses_iupac2016, dtype=torch.float64).to(dtype)


def _center_of_mass(masses: Tensor, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
    """Per-atom centre of mass of its system, [N, 3]."""
    n_systems = int(batch.max()) + 1 if batch.numel() > 0 else 0
    mass = masses[z].view(-1, 1)
    com = scatter(mass * pos, batch, n_systems, "add") / scatter(mass, batch, n_systems, "add")
    return com[batch]


class OutputModel(nn.Module):
    """Base class: ``pre_reduce`` per atom, ``reduce`` per system, ``post_reduce``.

    ``allow_prior_model`` says whether priors may be combined with the head (TorchMD-Net drops
    the priors, with a warning, when it is False).
    """

    allow_prior_model: bool = True

    def __init__(
        self,
        hidden_channels: int,
        activation: str = "silu",
        reduce_op: str = "add",
        dtype: torch.dtype = torch.float32,
        num_hidden_layers: int = 0,
    ):
        super().__init__()
        if reduce_op not in _REDUCE_OPS:
            raise ValueError(f"unknown reduce_op {reduce_op!r}; known: {', '.join(_REDUCE_OPS)}")
        self.hidden_channels = int(hidden_channels)
        self.reduce_op = reduce_op
        self.num_hidden_layers = int(num_hidden_layers)

    def pre_reduce(
        self, x: Tensor, v: Optional[Tensor], z: Tensor, pos: Tensor, batch: Tensor,
        box: Optional[Tensor] = None,
    ) -> Tensor:
        raise NotImplementedError

    def reduce(self, x: Tensor, batch: Tensor, n_systems: Optional[int] = None) -> Tensor:
        """Reduce per-atom values into ``n_systems`` rows (default ``batch.max() + 1``)."""
        if n_systems is None:
            n_systems = int(batch.max()) + 1 if batch.numel() > 0 else 0
        return scatter(x, batch, n_systems, self.reduce_op)

    def post_reduce(self, y: Tensor) -> Tensor:
        return y


class Scalar(OutputModel):
    """``MLP(F -> F/2 [-> F/2]*num_hidden_layers -> 1)`` per atom.

    TorchMD-Net (bug #343) always builds this head with zero hidden layers whatever
    ``output_mlp_num_layers`` says; here the depth is an argument so that a loader can pass
    what the state dict holds (:func:`infer_num_hidden_layers`).
    """

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        self.output_network = MLP(
            hidden_channels, 1, hidden_channels // 2, activation, num_hidden_layers, dtype=dtype
        )

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        return self.output_network(x)


class EquivariantScalar(OutputModel):
    """Two gated equivariant blocks, ``F -> F/2`` (with scalar activation) and ``F/2 -> 1``.

    Returns the scalar channel [N, 1]. TorchMD-Net adds ``0 * v.sum()`` so that every
    parameter gets a gradient during training; that term changes nothing for finite ``v`` and
    is left out. ``num_hidden_layers`` is the depth of the blocks' ``update_net`` (always 0 in
    TorchMD-Net, which ignores ``output_mlp_num_layers`` for this head).
    """

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        half = hidden_channels // 2
        self.output_network = nn.ModuleList([
            GatedEquivariantBlock(hidden_channels, half, activation=activation,
                                  scalar_activation=True, dtype=dtype,
                                  num_hidden_layers=num_hidden_layers),
            GatedEquivariantBlock(half, 1, activation=activation, dtype=dtype,
                                  num_hidden_layers=num_hidden_layers),
        ])

    def _gated(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.output_network:
            x, v = block(x, v)
        return x, v

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        return self._gated(x, v)[0]


class DipoleMoment(Scalar):
    """Atomic charges ``q_i = MLP(x_i)`` times positions relative to the centre of mass.

    ``pre_reduce -> q_i (r_i - R_com)`` [N, 3]; ``post_reduce -> |sum|`` [S, 1]. The centre of
    mass uses the ``atomic_mass`` buffer (see :func:`_atomic_mass_table`). No priors.
    """

    allow_prior_model = False

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        self.register_buffer("atomic_mass", _atomic_mass_table(dtype))

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        charges = self.output_network(x)
        return charges * (pos - _center_of_mass(self.atomic_mass, z, pos, batch))

    def post_reduce(self, y):
        return torch.linalg.vector_norm(y, dim=-1, keepdim=True)


class EquivariantDipoleMoment(EquivariantScalar):
    """Gated-block charges times positions relative to the centre of mass, plus the gated
    block's vector output: ``q_i (r_i - R_com) + v_i`` [N, 3]; ``post_reduce -> |sum|``."""

    allow_prior_model = False

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        self.register_buffer("atomic_mass", _atomic_mass_table(dtype))

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        charges, vec = self._gated(x, v)
        centered = pos - _center_of_mass(self.atomic_mass, z, pos, batch)
        # TorchMD-Net uses v.squeeze(), which for a single atom also drops the atom axis;
        # squeezing only the channel axis gives the same values with a stable shape.
        return charges * centered + vec.squeeze(-1)

    def post_reduce(self, y):
        return torch.linalg.vector_norm(y, dim=-1, keepdim=True)


class ElectronicSpatialExtent(OutputModel):
    """``MLP(x_i) * |r_i - R_com|^2`` per atom (the <R^2> target of QM9). No priors."""

    allow_prior_model = False

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        self.output_network = MLP(
            hidden_channels, 1, hidden_channels // 2, activation, num_hidden_layers, dtype=dtype
        )
        self.register_buffer("atomic_mass", _atomic_mass_table(dtype))

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        weight = self.output_network(x)
        centered = pos - _center_of_mass(self.atomic_mass, z, pos, batch)
        # norm, then square (not a sum of squares), as TorchMD-Net rounds it
        return torch.linalg.vector_norm(centered, dim=1, keepdim=True) ** 2 * weight


class EquivariantElectronicSpatialExtent(ElectronicSpatialExtent):
    """TorchMD-Net's equivariant variant is the plain one (scalar features only)."""


class EquivariantVectorOutput(EquivariantScalar):
    """The gated blocks' vector channel, [N, 3] per atom; always summed (TorchMD-Net forces
    ``reduce_op="sum"`` for this head whatever is asked). No priors."""

    allow_prior_model = False

    def __init__(self, hidden_channels, activation="silu", reduce_op="add",
                 dtype=torch.float32, num_hidden_layers=0):
        super().__init__(hidden_channels, activation, "sum", dtype, num_hidden_layers)

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        return self._gated(x, v)[1].squeeze(-1)


# 1/2 e^2 / (4 pi eps0) in eV Angstrom: half a Hartree times a Bohr radius (ASE's values, as
# TorchMD-Net's head has them); every pair is added to both of its atoms.
_HALF_COULOMB_EV_ANGSTROM = 0.5 * 27.211386024367243 * 0.5291772105638411
# The short-range damping's radius (Angstrom) and the reaction field's solvent permittivity.
_DAMPING_RADIUS = 4.6
_EPSILON_SOLVENT = 78.3


def _short_range_damping(distance: Tensor) -> Tensor:
    """1 - exp(1 - 1 / (1 - (d / 4.6)^2)) for d < 4.6 Angstrom, 1 beyond: 0 at contact."""
    x = (distance / _DAMPING_RADIUS).clamp(0.0, 1.0 - 1e-6)
    return 1.0 - torch.exp(1.0 - 1.0 / (1.0 - x * x))


def _pairs_in_systems(batch: Tensor) -> tuple[Tensor, Tensor]:
    """Every pair i < j of atoms in the same system (O(N^2) candidates)."""
    first, second = torch.triu_indices(batch.shape[0], batch.shape[0], 1, device=batch.device)
    same = batch[first] == batch[second]
    return first[same], second[same]


def _perpendicular_widths(box: Tensor) -> Tensor:
    """Distances between opposite faces of cells ``box`` [..., 3, 3] (rows a, b, c) -> [..., 3]."""
    volume = torch.linalg.det(box).abs()
    faces = torch.stack([torch.linalg.cross(box[..., 1, :], box[..., 2, :]),
                         torch.linalg.cross(box[..., 2, :], box[..., 0, :]),
                         torch.linalg.cross(box[..., 0, :], box[..., 1, :])], -2)
    return volume[..., None] / torch.linalg.vector_norm(faces, dim=-1)


class ScalarPlusWeightedCoulomb(Scalar):
    """The :class:`Scalar` MLP per atom plus a Coulomb energy of predicted partial charges.

    ``x`` [N, F + C] carries the features and then C = (num_layers + 1) q_dim charge channels
    (TensorNet2's ``output_charges``). Per channel k every pair of atoms in a system adds
    ``k_e / 2 * f(r) q_ik q_jk * g(r)`` to both atoms (eV, Angstrom), f the short-range damping
    (0 at contact, 1 from 4.6 Angstrom), averaged over the channels with the ``qweights``
    buffer [C] (the ``q_weights`` hyper-parameter, one value or q_dim values per prediction):

    * ``coulomb_cutoff`` None: g = 1 / r over all pairs of each system, open boundaries only
      (a box is an error);
    * ``coulomb_cutoff`` r_c: the reaction field g = 1 / r + k_rf r^2 - c_rf (OpenMM's form,
      solvent permittivity 78.3) over pairs closer than r_c; periodic cells need every
      perpendicular width >= 2 r_c (minimum image), checked.

    The box is the call's (as TorchMD-Net passes it), not the checkpoint's ``box_vecs``.
    """

    def __init__(self, hidden_channels, activation="silu", reduce_op="add", dtype=torch.float32,
                 num_hidden_layers=0, q_dim: int = 0, num_layers: int = 0,
                 q_weights: Sequence = (), coulomb_cutoff: Optional[float] = None):
        super().__init__(hidden_channels, activation, reduce_op, dtype, num_hidden_layers)
        if q_dim < 1:
            raise ValueError(f"ScalarPlusWeightedCoulomb needs q_dim >= 1 charge channels per prediction, got {q_dim}")
        if len(q_weights) != num_layers + 1:
            raise ValueError(
                f"q_weights needs one entry per charge prediction (num_layers + 1 = {num_layers + 1}), "
                f"got {len(q_weights)}"
            )
        weights = torch.zeros(num_layers + 1, q_dim, dtype=dtype)
        for k, layer_weights in enumerate(q_weights):
            weights[k] = torch.as_tensor(layer_weights, dtype=dtype)
        if not bool(torch.isfinite(weights).all()) or float(weights.sum()) == 0.0:
            raise ValueError(f"q_weights must be finite and must not sum to zero (the charges' mean), got {list(q_weights)}")
        self.register_buffer("qweights", weights.flatten())
        self.coulomb_cutoff = None if coulomb_cutoff is None else float(coulomb_cutoff)

    def pre_reduce(self, x, v, z, pos, batch, box=None):
        F = self.hidden_channels
        charges = x[:, F:]
        if charges.shape[1] != self.qweights.shape[0]:
            raise ValueError(
                f"ScalarPlusWeightedCoulomb expects {self.qweights.shape[0]} charge channels after the "
                f"{F} features, got {charges.shape[1]}"
            )
        first, second, distance, kernel = self._pairs(pos, batch, box)
        products = (charges[first] * charges[second]) @ self.qweights / self.qweights.sum()
        pair_energy = _HALF_COULOMB_EV_ANGSTROM * _short_range_damping(distance) * products * kernel
        coulomb = pair_energy.new_zeros(x.shape[0]).index_add(0, first, pair_energy).index_add(0, second, pair_energy)
        return self.output_network(x[:, :F]) + coulomb[:, None]

    def _pairs(self, pos: Tensor, batch: Tensor, box: Optional[Tensor]):
        """The Coulomb pairs (first, second) [P], their distances [P] and g(r) [P]."""
        if self.coulomb_cutoff is None:
            if box is not None:
                raise ValueError(
                    "ScalarPlusWeightedCoulomb without coulomb_cutoff sums over all pairs of a molecule and "
                    "cannot be periodic; this model was trained for open systems (no box)"
                )
            first, second = _pairs_in_systems(batch)
            distance = torch.linalg.vector_norm(pos[first] - pos[second], dim=-1)
            return first, second, distance, 1.0 / distance
        rc = self.coulomb_cutoff
        if box is not None:
            widths = _perpendicular_widths(box.to(pos.dtype))
            if bool((widths < 2 * rc).any()):
                raise ValueError(
                    f"the reaction-field Coulomb term needs every perpendicular width of the cell >= 2 * "
                    f"coulomb_cutoff = {2 * rc:g} Angstrom (minimum image); the smallest is {float(widths.min()):.4g}"
                )
        graph = neighbor_list(pos, batch, rc, 0.0, box=box, half=True)
        first, second = graph.edge_index
        distance = graph.edge_weight
        eps = _EPSILON_SOLVENT
        k_rf = (eps - 1.0) / (2.0 * eps + 1.0) / rc**3
        c_rf = 3.0 * eps / (2.0 * eps + 1.0) / rc
        return first, second, distance, 1.0 / distance + k_rf * distance**2 - c_rf


OUTPUT_MODELS: dict[str, type[OutputModel]] = {
    cls.__name__: cls
    for cls in (
        Scalar,
        EquivariantScalar,
        DipoleMoment,
        EquivariantDipoleMoment,
        ElectronicSpatialExtent,
        EquivariantElectronicSpatialExtent,
        EquivariantVectorOutput,
        ScalarPlusWeightedCoulomb,
    )
}


def head_arguments(hparams: dict) -> dict:
    """Constructor arguments a head takes beyond the shared ones, from TorchMD-Net
    hyper-parameters (as its ``create_model`` passes them)."""
    if hparams.get("output_model") != "ScalarPlusWeightedCoulomb":
        return {}
    return dict(
        q_dim=int(hparams.get("q_dim", 0) or 0), num_layers=int(hparams["num_layers"]),
        q_weights=list(hparams.get("q_weights") or []), coulomb_cutoff=hparams.get("coulomb_cutoff"),
    )


def output_model_class(name: str, equivariant: bool) -> type[OutputModel]:
    """The head TorchMD-Net builds for hyper-parameter ``output_model=name``.

    As in TorchMD-Net's ``create_model``, an equivariant representation (ET) prefixes the name
    with ``Equivariant`` (``Scalar`` -> :class:`EquivariantScalar`, ``VectorOutput`` ->
    :class:`EquivariantVectorOutput`); TensorNet, TensorNet2 and GN use the name as is.
    """
    full = ("Equivariant" if equivariant else "") + name
    try:
        return OUTPUT_MODELS[full]
    except KeyError:
        kind = "an equivariant" if equivariant else "a non-equivariant"
        raise ValueError(
            f"unknown output model {name!r} for {kind} representation (looked up {full!r}); "
            f"known: {', '.join(sorted(OUTPUT_MODELS))}"
        ) from None


_LINEAR_KEY = re.compile(
    r"output_network\.(?:layers\.(\d+)"  # MLP heads
    r"|0\.update_net\.(?:layers\.)?(\d+)"  # gated heads (first block; pre-#314 keys too)
    r"|(\d+))\.weight$"  # MLP heads before TorchMD-Net PR #314
)


def infer_num_hidden_layers(state_dict_keys: Iterable[str], prefix: str = "output_model.") -> int:
    """Number of hidden layers of the head's MLP, read from the state-dict keys.

    Counts the linear layers of ``{prefix}output_network.layers.*`` (MLP heads) or of
    ``{prefix}output_network.0.update_net.layers.*`` (gated heads); an MLP with ``k`` linear
    layers has ``k - 2`` hidden layers. Also understands the keys of checkpoints older than
    TorchMD-Net PR #314 (``output_network.{0,2}.weight``, ``output_network.0.update_net.0.weight``).
    """
    indices: set[int] = set()
    for key in state_dict_keys:
        if not key.startswith(prefix):
            continue
        match = _LINEAR_KEY.fullmatch(key[len(prefix):])
        if match:
            indices.add(int(next(g for g in match.groups() if g is not None)))
    if not indices:
        raise ValueError(f"no output-network linear layers under {prefix!r} in the state dict")
    if len(indices) < 2 or sorted(indices) != list(range(0, 2 * len(indices), 2)):
        raise ValueError(
            f"unexpected output-network layer indices {sorted(indices)} under {prefix!r}"
        )
    return len(indices) - 2
