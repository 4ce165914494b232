"""Prior models with TorchMD-Net 3.1 semantics and buffer names.

A prior adds a physics term to the network's prediction, either per atom before the
reduction (:meth:`Prior.pre_reduce`, Atomref) or per system after it (:meth:`Prior.post_reduce`,
ZBL, D2, Coulomb). In TorchMD-Net's forward pass the order is::

    x = head.pre_reduce(...) * std
    for p in priors: x = p.pre_reduce(x, z, pos, batch, extra_args)
    y = head.post_reduce(head.reduce(x, batch) + mean)
    for p in priors: y = p.post_reduce(y, z, pos, batch, box, extra_args)

Constructors take the keyword arguments TorchMD-Net stores in a checkpoint's ``prior_args``
(``get_init_args`` of its prior classes), so ``Cls(**prior_args[i])`` works. The ``dataset``
argument is accepted for TorchMD-Net compatibility and only read for values not given
explicitly (``get_atomref()``, ``atomic_number``, ``distance_scale``, ``energy_scale``).
``max_num_neighbors`` is accepted and ignored: :func:`fastnnp.neighbors.neighbor_list` has no
per-atom cap (TorchMD-Net fails when the cap is exceeded). ZBL and D2 call it through their
``neighbor_search`` attribute, the hook :func:`fastnnp.neighbors.reuse.use_verlet_skin`
replaces by a Verlet cache (as for the representations). TorchMD-Net's priors also own a
neighbour-list submodule whose ``distance.box``/``distances.box`` buffer appears in the state
dict; these priors have none, and checkpoint loading drops those keys.

State-dict entries: Atomref ``initial_atomref``, ``atomref.weight``; ZBL ``atomic_number``;
D2 ``Z_map``, ``C_6``, ``R_r``; Coulomb none.
"""

import math
import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from fastnnp.models.common.radial import cosine_cutoff
from fastnnp.models.common.scatter import scatter
from fastnnp.neighbors import neighbor_list

# e^2 / (4 pi eps0) in J m, with the two different roundings TorchMD-Net uses in ZBL and Coulomb.
_COULOMB_J_M_ZBL = 2.30707755e-28
_COULOMB_J_M_COULOMB = 2.30707e-28
_BOHR_M = 5.29177210903e-11  # Bohr radius (CODATA 2018) in m
_AVOGADRO = 6.02214076e23


class Prior(nn.Module):
    """Base class: identity in both stages."""

    def pre_reduce(self, x: Tensor, z: Tensor, pos: Tensor, batch: Tensor,
                   extra_args: Optional[dict[str, Tensor]] = None) -> Tensor:
        """Per-atom predictions ``x`` [N, 1] -> [N, 1]."""
        return x

    def post_reduce(self, y: Tensor, z: Tensor, pos: Tensor, batch: Tensor,
                    box: Optional[Tensor] = None,
                    extra_args: Optional[dict[str, Tensor]] = None) -> Tensor:
        """Per-system predictions ``y`` [S, 1] -> [S, 1]."""
        return y


def _from_dataset(value: Any, dataset: Any, attribute: str, prior: str) -> Any:
    if value is not None:
        return value
    if dataset is not None and hasattr(dataset, attribute):
        return getattr(dataset, attribute)
    raise ValueError(f"{prior} prior needs {attribute!r} (from prior_args or a dataset)")


def _add_per_system(y: Tensor, energy: Tensor, system: Tensor) -> Tensor:
    """``y + scatter_add(energy, system)``, shaped like ``y`` (systems without pairs get 0)."""
    return y + scatter(energy, system, y.shape[0], "add").reshape(y.shape)


class Atomref(Prior):
    """Per-element reference values added to each atom's prediction: ``x_i + atomref[z_i]``.

    Args:
        max_z: number of rows of the table (zeros; the real values come from the state dict).
        dataset: alternatively, an object whose ``get_atomref()`` returns the table
            (``None`` -> zeros with 100 rows, with a warning, as TorchMD-Net).
        trainable: whether ``atomref.weight`` is a trainable parameter (irrelevant here).
        enable: when False the prior is a no-op but keeps its table.

    ``enable`` and ``remove_ref_energy``: training with ``remove_ref_energy: true`` subtracts
    ``initial_atomref[z]`` from the training energies and appends ``Atomref(enable=False)`` as
    the *last* prior, so ``prior_args`` records ``enable: False`` and the model predicts
    energies relative to the atomic references. TorchMD-Net's ``load_model`` keeps it disabled
    unless the caller passes ``remove_ref_energy=False``, which enables that last Atomref and
    gives total energies (its ASE calculator passes ``remove_ref_energy=True`` by default).
    ``fastnnp.loading`` reproduces that switch.
    """

    def __init__(self, max_z: Optional[int] = None, dataset: Any = None,
                 trainable: bool = False, enable: bool = True):
        super().__init__()
        if dataset is not None:
            table = dataset.get_atomref()
            if table is None:
                warnings.warn("the dataset's atomref is None; using zeros for atomic numbers < 100", stacklevel=2)
                table = torch.zeros(100, 1)
        elif max_z is not None:
            table = torch.zeros(int(max_z), 1)
        else:
            raise ValueError("Atomref prior needs max_z (or a dataset with get_atomref())")
        table = torch.as_tensor(table)
        if table.ndim == 1:
            table = table.view(-1, 1)
        self.register_buffer("initial_atomref", table)
        self.atomref = nn.Embedding(len(table), 1, _weight=table.clone(), _freeze=not trainable)
        self.enable = bool(enable)

    def pre_reduce(self, x, z, pos, batch, extra_args=None):
        if not self.enable:
            return x
        return x + self.atomref.weight[z]


class LearnableAtomref(Atomref):
    """TorchMD-Net's trainable Atomref (same buffers and forward as :class:`Atomref`).

    TorchMD-Net's own class only takes ``max_z``, so it cannot be rebuilt from the
    ``prior_args`` it writes (which also hold ``trainable`` and ``enable``); this one accepts them.
    """

    def __init__(self, max_z: Optional[int] = None, dataset: Any = None,
                 trainable: bool = True, enable: bool = True):
        super().__init__(max_z, dataset, trainable=True, enable=True)


class ZBL(Prior):
    """Ziegler-Biersack-Littmark screened nuclear repulsion (Ziegler, Biersack, Littmark,
    "The Stopping and Range of Ions in Solids", 1985, eqs. 9-10 p. 147), added after the
    reduction::

        a_ij = 0.8854 a0 / (Z_i^0.23 + Z_j^0.23)
        phi(x) = 0.1818 e^-3.2x + 0.5099 e^-0.9423x + 0.2802 e^-0.4029x + 0.02817 e^-0.2016x
        E = 1/2 sum_{i != j, r_ij < cutoff} k_e Z_i Z_j phi(r_ij / a_ij) fc(r_ij) / r_ij

    with ``fc`` the cosine cutoff at ``cutoff_distance`` (same unit as positions),
    ``atomic_number[z]`` the atomic number of atom type ``z``, and the energy converted from J
    with ``energy_scale`` (J per energy unit, not J/mol) and ``distance_scale`` (m per length
    unit). Periodic boxes are honoured (minimum image; box widths >= 2 cutoff).

    As in TorchMD-Net, ``a_ij`` is computed in the default float dtype (float32) even when the
    model runs in float64 (``long ** 0.23`` promotes to the default dtype).
    """

    def __init__(self, cutoff_distance: float, max_num_neighbors: Optional[int] = None,
                 atomic_number: Any = None, distance_scale: Optional[float] = None,
                 energy_scale: Optional[float] = None, dataset: Any = None):
        super().__init__()
        atomic_number = _from_dataset(atomic_number, dataset, "atomic_number", "ZBL")
        self.distance_scale = float(_from_dataset(distance_scale, dataset, "distance_scale", "ZBL"))
        self.energy_scale = float(_from_dataset(energy_scale, dataset, "energy_scale", "ZBL"))
        self.cutoff_distance = float(cutoff_distance)
        self.max_num_neighbors = max_num_neighbors
        self.register_buffer("atomic_number", torch.as_tensor(atomic_number, dtype=torch.long))
        self.neighbor_search = neighbor_list  # a fastnnp.neighbors.reuse cache may replace it

    def post_reduce(self, y, z, pos, batch, box=None, extra_args=None):
        if box is not None:
            box = box.to(pos.dtype)
        nl = self.neighbor_search(pos, batch, self.cutoff_distance, 0.0, box, loop=False)
        zi, zj = self.atomic_number[z[nl.edge_index]]
        dist = nl.edge_weight
        # float32 (default dtype) screening length, as TorchMD-Net computes it
        default = torch.get_default_dtype()
        screening = 0.8854 * _BOHR_M / (zi.to(default) ** 0.23 + zj.to(default) ** 0.23)
        reduced = dist * self.distance_scale / screening
        phi = (
            0.1818 * torch.exp(-3.2 * reduced)
            + 0.5099 * torch.exp(-0.9423 * reduced)
            + 0.2802 * torch.exp(-0.4029 * reduced)
            + 0.02817 * torch.exp(-0.2016 * reduced)
        )
        phi = phi * cosine_cutoff(dist, 0.0, self.cutoff_distance)
        pair = phi * zi * zj / dist
        # both directions of each pair are listed: halve
        scale = 0.5 * (_COULOMB_J_M_ZBL / self.energy_scale / self.distance_scale)
        return _add_per_system(y, scale * pair, batch[nl.edge_index[0]])


# Grimme's DFT-D2 parameters, S. Grimme, J. Comput. Chem. 27, 1787 (2006), Table 1:
# C6 in J nm^6 mol^-1 and van der Waals radius R0 in Angstrom, for Z = 1..54 (row 0 unused).
_D2_C6_R0 = (
    (math.nan, math.nan),
    (0.14, 1.001), (0.08, 1.012),  # H He
    (1.61, 0.825), (1.61, 1.408), (3.13, 1.485), (1.75, 1.452),  # Li Be B C
    (1.23, 1.397), (0.70, 1.342), (0.75, 1.287), (0.63, 1.243),  # N O F Ne
    (5.71, 1.144), (5.71, 1.364), (10.79, 1.639), (9.23, 1.716),  # Na Mg Al Si
    (7.84, 1.705), (5.57, 1.683), (5.07, 1.639), (4.61, 1.595),  # P S Cl Ar
    (10.80, 1.485), (10.80, 1.474),  # K Ca
    *((10.80, 1.562),) * 10,  # Sc..Zn
    (16.99, 1.650), (17.10, 1.727), (16.37, 1.760), (12.64, 1.771),  # Ga Ge As Se
    (12.47, 1.749), (12.01, 1.727),  # Br Kr
    (24.67, 1.628), (24.67, 1.606),  # Rb Sr
    *((24.67, 1.639),) * 10,  # Y..Cd
    (37.32, 1.672), (38.71, 1.804), (38.44, 1.881), (31.74, 1.892),  # In Sn Sb Te
    (31.50, 1.892), (29.99, 1.881),  # I Xe
)


class D2(Prior):
    """Grimme's DFT-D2 dispersion, added after the reduction (no periodic images: the box is
    ignored, as in TorchMD-Net)::

        E = -s6 / 2 sum_{i != j, r_ij < cutoff} C6_ij / R_ij^6 / (1 + exp(-d (R_ij / Rr_ij - 1)))
        C6_ij = sqrt(C6_i C6_j),  Rr_ij = R0_i + R0_j,  s6 = 1,  d = 20

    computed in nm and J/mol, converted to the data's units with ``distance_scale`` (m per
    length unit) and ``energy_scale`` (J per energy unit, not J/mol). ``cutoff_distance`` is in
    the position unit; ``atomic_number[z]`` maps atom types to atomic numbers (<= 54).

    The ``C_6``/``R_r`` buffers are built in ``dtype`` (float32 by default, as TorchMD-Net
    builds them before casting the model), so a float64 model carries float32-rounded values
    unless a state dict overwrites them.
    """

    s_6 = 1.0
    d = 20.0

    def __init__(self, cutoff_distance: float, max_num_neighbors: Optional[int] = None,
                 atomic_number: Any = None, distance_scale: Optional[float] = None,
                 energy_scale: Optional[float] = None, dataset: Any = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        atomic_number = _from_dataset(atomic_number, dataset, "atomic_number", "D2")
        self.distance_scale = float(_from_dataset(distance_scale, dataset, "distance_scale", "D2"))
        self.energy_scale = float(_from_dataset(energy_scale, dataset, "energy_scale", "D2"))
        self.cutoff_distance = float(cutoff_distance)
        self.max_num_neighbors = max_num_neighbors
        table = torch.tensor(_D2_C6_R0, dtype=torch.float64)
        self.register_buffer("Z_map", torch.as_tensor(list(atomic_number), dtype=torch.long))
        self.register_buffer("C_6", table[:, 0].to(dtype))
        self.register_buffer("R_r", (table[:, 1] * 0.1).to(dtype))  # Angstrom -> nm
        self.neighbor_search = neighbor_list  # a fastnnp.neighbors.reuse cache may replace it

    def post_reduce(self, y, z, pos, batch, box=None, extra_args=None):
        nl = self.neighbor_search(pos, batch, self.cutoff_distance, 0.0, None, loop=False)
        r = nl.edge_weight * (self.distance_scale * 1e9)  # -> nm
        elements = self.Z_map[z[nl.edge_index]]
        c6 = self.C_6[elements].prod(dim=0).sqrt()
        r0 = self.R_r[elements].sum(dim=0)
        damping = 1 / (1 + torch.exp(-self.d * (r / r0 - 1)))
        pair = c6 / r**6 * damping
        # both directions of each pair are listed: halve; J/mol -> data energy unit
        scale = -self.s_6 / 2 / (self.energy_scale * _AVOGADRO)
        return _add_per_system(y, scale * pair, batch[nl.edge_index[0]])


def _pairs_within_systems(batch: Tensor) -> tuple[Tensor, Tensor]:
    """Every unordered pair (i, j), i != j, of atoms in the same system (any atom order)."""
    n = batch.shape[0]
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch)
    ends = torch.cumsum(counts, 0)[batch[order]]  # exclusive end of each atom's group (sorted)
    rank = torch.arange(n, device=batch.device)
    partners = ends - rank - 1  # later atoms in the same group
    first = torch.repeat_interleave(rank, partners)
    starts = torch.cumsum(partners, 0) - partners
    second = first + 1 + torch.arange(first.shape[0], device=batch.device) \
        - torch.repeat_interleave(starts, partners)
    return order[first], order[second]


def _minimum_image(vec: Tensor, box: Tensor) -> Tensor:
    """TorchMD-Net's minimum image for a reduced triclinic box (rows a, b, c): subtract
    round(.) multiples of c, then b, then a. ``box`` is [3, 3] or per pair [E, 3, 3]."""
    box = box.tril()  # only a, b_x, b_y, c enter (reduced form), as in TorchMD-Net
    box = box.expand(vec.shape[0], 3, 3) if box.dim() == 2 else box
    vec = vec - torch.round(vec[:, 2:3] / box[:, 2, 2:3]) * box[:, 2]
    vec = vec - torch.round(vec[:, 1:2] / box[:, 1, 1:2]) * box[:, 1]
    return vec - torch.round(vec[:, 0:1] / box[:, 0, 0:1]) * box[:, 0]


class Coulomb(Prior):
    """Coulomb energy of given partial charges, switched off at short range::

        s(r) = 1/2 - 1/2 cos(pi (clamp(r, lo, hi) - lo) / (hi - lo))
        E = 1/2 sum_{i != j in a system} k_e' s(r_ij) q_i q_j / r_ij

    The charges come from ``extra_args["partial_charges"]`` ([N], elementary charges); without
    them :meth:`post_reduce` raises ValueError. All pairs of a system interact (no cutoff).

    TorchMD-Net quirks kept on purpose (its checkpoints were trained with them):

    * distances are converted to nm (``r = 1e9 * distance_scale * |dr|``) and the switching
      distances ``lower_switch_distance``/``upper_switch_distance`` are compared in nm, but
      the prefactor is ``k_e' = 2.30707e-28 J m / energy_scale / distance_scale``, i.e. the nm
      distance is treated as if it were in the data's length unit: the energy is only
      physical for nm data (``distance_scale = 1e-9``), and 10x too large for Angstrom data;
    * the switching distances are rounded to the default float dtype (float32), and
      ``hi - lo`` is computed in it, even for float64 models;
    * with a box (the ``box`` argument, else ``box_vecs``), the minimum image is taken on the
      nm positions with the box as given, unscaled.

    ``initial_box`` is accepted as a synonym of ``box_vecs``: it is the key TorchMD-Net's
    ``get_init_args`` writes (and then cannot read back).
    """

    def __init__(self, lower_switch_distance: float, upper_switch_distance: float,
                 max_num_neighbors: Optional[int] = None, distance_scale: Optional[float] = None,
                 energy_scale: Optional[float] = None, box_vecs: Any = None, dataset: Any = None,
                 initial_box: Any = None):
        super().__init__()
        self.distance_scale = float(_from_dataset(distance_scale, dataset, "distance_scale", "Coulomb"))
        self.energy_scale = float(_from_dataset(energy_scale, dataset, "energy_scale", "Coulomb"))
        self.lower_switch_distance = float(lower_switch_distance)
        self.upper_switch_distance = float(upper_switch_distance)
        self.max_num_neighbors = max_num_neighbors
        # TorchMD-Net rounds the switching distances to the default dtype (torch.tensor(...))
        # and takes their difference in it, whatever the model's dtype
        lower, upper = torch.tensor(self.lower_switch_distance), torch.tensor(self.upper_switch_distance)
        self._switch = (float(lower), float(upper), float(upper - lower))
        box = box_vecs if box_vecs is not None else initial_box
        self.register_buffer(
            "initial_box", None if box is None else torch.as_tensor(box), persistent=False
        )

    def post_reduce(self, y, z, pos, batch, box=None, extra_args=None):
        if extra_args is None or "partial_charges" not in extra_args:
            raise ValueError(
                "the Coulomb prior needs per-atom partial charges: pass "
                "extra_args={'partial_charges': tensor of shape [n_atoms]}"
            )
        charges = extra_args["partial_charges"].reshape(-1)
        if charges.shape[0] != pos.shape[0]:
            raise ValueError(
                f"partial_charges has {charges.shape[0]} entries for {pos.shape[0]} atoms"
            )
        box = box if box is not None else self.initial_box
        i, j = _pairs_within_systems(batch)
        nm = (1e9 * self.distance_scale) * pos
        vec = nm[i] - nm[j]
        if box is not None:
            box = box.to(vec.dtype)
            vec = _minimum_image(vec, box if box.dim() == 2 else box[batch[i]])
        dist = torch.linalg.vector_norm(vec, dim=-1)
        lo, hi, width = self._switch
        phase = (dist.clamp(lo, hi) - lo) / width
        pair = (0.5 - 0.5 * torch.cos(math.pi * phase)) * charges[i] * charges[j] / dist
        # each unordered pair once = TorchMD-Net's 1/2 * sum over both directions
        scale = _COULOMB_J_M_COULOMB / self.energy_scale / self.distance_scale
        return _add_per_system(y, scale * pair, batch[i])


PRIORS: dict[str, type[Prior]] = {
    cls.__name__: cls for cls in (Atomref, LearnableAtomref, ZBL, D2, Coulomb)
}


def _prior_specs(hparams: dict) -> list[tuple[str, dict]]:
    """(name, kwargs) pairs from ``prior_model``/``prior_args``, as TorchMD-Net parses them."""
    spec = hparams.get("prior_model")
    if not spec:
        return []
    names: list[str] = []
    kwargs: list[Any] = []
    for item in spec if isinstance(spec, list) else [spec]:
        if isinstance(item, dict):
            for name, args in item.items():
                names.append(name)
                kwargs.append(args)
        else:
            names.append(item)
            kwargs.append({})
    if hparams.get("prior_args") is not None:
        args = hparams["prior_args"]
        kwargs = args if isinstance(args, list) else [args]
    if len(kwargs) != len(names):
        # TorchMD-Net zips the two lists, silently dropping the surplus
        warnings.warn(
            f"{len(names)} prior name(s) {names} but {len(kwargs)} prior_args entries; "
            f"using the first {min(len(names), len(kwargs))} as TorchMD-Net does",
            stacklevel=2,
        )
    return [(name, dict(args or {})) for name, args in zip(names, kwargs, strict=False)]


def build_priors(hparams: dict) -> list[Prior]:
    """The priors a TorchMD-Net checkpoint's hyper-parameters describe, in order.

    Accepts every form TorchMD-Net's ``create_prior_models`` accepts::

        prior_model: "Atomref"                  prior_args: {"max_z": 100}
        prior_model: ["Atomref", "ZBL"]         prior_args: [{...}, {...}]
        prior_model: [{"Atomref": {"max_z": 100}}, {"ZBL": {...}}]      (no prior_args)
        prior_model: {"Atomref": {...}, "ZBL": {...}}

    ``prior_args`` (when present and not None) replaces the arguments given inline; this is
    what ``torchmd-train`` writes (one ``get_init_args()`` dict per prior), e.g.
    ``prior_model: [{"Atomref": {"enable": False}}]`` with
    ``prior_args: [{"max_z": 100, "trainable": False, "enable": False}]``. A name with
    ``None`` arguments gets none. Raises ValueError for an unknown prior name.
    """
    priors = []
    for name, kwargs in _prior_specs(hparams):
        if name not in PRIORS:
            raise ValueError(f"unknown prior model {name!r}; known: {', '.join(PRIORS)}")
        try:
            priors.append(PRIORS[name](**kwargs))
        except TypeError as error:
            raise ValueError(f"bad prior_args for {name}: {error}") from None
    return priors

