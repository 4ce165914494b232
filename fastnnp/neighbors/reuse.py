"""Verlet-skin reuse of the neighbour search across MD steps.

A search is run once with cutoffs widened by ``skin`` (``cutoff_upper + skin``, lower cutoff
``max(0, cutoff_lower - skin)``) and reused while no atom has moved more than ``skin / 2``
from where it was at the build, and the atom count, ``batch``, box and cutoffs are unchanged:
two atoms then approach or separate by at most ``skin``, so every pair within the cutoffs now
was within the widened cutoffs at the build. The widening also carries a rounding margin
(:func:`_rounding_margin`, ~1e-3 of a length unit in float32), so the guarantee holds for
the computed lengths, not only for exact ones. Lattice images refer to the positions as given
(not wrapped), so they stay valid while atoms move continuously; re-wrapping positions into
the cell moves atoms by a lattice vector and forces a rebuild.

``skin`` is in the model's length unit; 0 rebuilds on every call.

:class:`VerletNeighborList` re-filters the cached candidates on every call with the exact
rule of :func:`fastnnp.neighbors.neighbor_list` (:func:`.edges.within_cutoffs`), so its output
is bit-identical to it.
:class:`VerletNeighborTable` caches the Triton search's table as is (see its docstring).
:func:`use_verlet_skin` gives every search hook of a model (its representations' and its
pair priors') its own cache.
"""

import math
from typing import Callable, Hashable, Iterator, Optional

import torch
from torch import Tensor, nn

from .cell_list import NeighborList, neighbor_list
from .checks import check_search_inputs
from .edges import edge_vectors, safe_norm, within_cutoffs
from .table import NeighborTable


def check_skin(skin: float) -> float:
    """``skin`` as a float; ValueError unless it is finite and >= 0."""
    value = float(skin)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"skin must be a finite number >= 0, got {skin}")
    return value


def _rounding_margin(pos: Tensor, box: Optional[Tensor], reach: float) -> float:
    """Generous bound (length units) on twice the rounding error of one edge length computed
    in ``pos.dtype`` from positions up to ``max|pos|`` (plus the box rows' lengths) apart."""
    scale = float(pos.detach().abs().max()) if pos.numel() > 0 else 0.0
    if box is not None:
        scale += float(box.detach().reshape(-1, 3, 3).norm(dim=2).sum(dim=1).max())
    return 64.0 * torch.finfo(pos.dtype).eps * (4.0 * scale + 3.0 * reach)


def _same(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a, b)


class _SkinCache:
    """What a cached search was built for, and whether it still holds (module docstring)."""

    def __init__(self, skin: float):
        self.skin = check_skin(skin)
        self.builds = 0
        self._pos: Optional[Tensor] = None
        self._batch: Optional[Tensor] = None
        self._box: Optional[Tensor] = None
        self._settings: Hashable = None

    def _valid(self, pos: Tensor, batch: Tensor, box: Optional[Tensor], settings: Hashable) -> bool:
        ref = self._pos
        if self.skin == 0 or ref is None or settings != self._settings:
            return False
        if pos.dtype != ref.dtype or pos.device != ref.device or pos.shape != ref.shape:
            return False
        if not _same(batch, self._batch) or not _same(None if box is None else box.detach(), self._box):
            return False
        return pos.shape[0] == 0 or float((pos.detach() - ref).norm(dim=1).max()) <= self.skin / 2

    def _record(self, pos: Tensor, batch: Tensor, box: Optional[Tensor], settings: Hashable) -> None:
        self.builds += 1
        self._pos = pos.detach().clone()
        self._batch = batch.clone()
        self._box = None if box is None else box.detach().clone()
        self._settings = settings

    def _widened(self, pos: Tensor, box: Optional[Tensor], cu: float, cl: float) -> tuple[float, float]:
        """(upper, lower) cutoffs of the candidate search."""
        reach = self.skin + _rounding_margin(pos, box, cu + self.skin)
        return cu + reach, max(0.0, cl - reach)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(skin={self.skin}, builds={self.builds})"


class VerletNeighborList(_SkinCache):
    """Drop-in for :func:`fastnnp.neighbors.neighbor_list` (same arguments but ``pbc``, same
    output, bit for bit) that reuses the pair search while it is valid (module docstring).

    On a rebuild the candidates are searched with the widened cutoffs (no grad) and their
    (edge_index, image) kept. Every call recomputes their lengths from the given ``pos`` /
    ``box``, keeps ``cutoff_lower <= d < cutoff_upper`` plus, with ``loop``, the (i, i, image 0)
    self loops, and computes ``edge_vec`` / ``edge_weight`` for those with
    ``neighbor_list``'s own functions (:mod:`.edges`), so gradients reach ``pos`` and ``box``. The kept
    candidates are in sorted order, hence so is the output (with ``half``, each pair once in
    ``neighbor_list``'s canonical form). ``builds`` counts the searches.

    Shapes as for ``neighbor_list``: pos [N, 3], batch [N], box None, (3, 3) or (S, 3, 3);
    cutoffs and skin in the same length unit.
    """

    def __init__(self, skin: float):
        super().__init__(skin)
        self._edge_index: Optional[Tensor] = None
        self._image: Optional[Tensor] = None

    def __call__(
        self,
        pos: Tensor,
        batch: Tensor,
        cutoff_upper: float,
        cutoff_lower: float = 0.0,
        box: Optional[Tensor] = None,
        loop: bool = False,
        half: bool = False,
    ) -> NeighborList:
        pos, batch, box, _, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, None)
        settings = (cu, cl, bool(loop), bool(half))
        if not self._valid(pos, batch, box, settings):
            upper, lower = self._widened(pos, box, cu, cl)
            with torch.no_grad():
                candidates = neighbor_list(
                    pos.detach(), batch, upper, lower, None if box is None else box.detach(), loop, half=half
                )
            self._edge_index, self._image = candidates.edge_index, candidates.image
            self._record(pos, batch, box, settings)
        boxc = None if box is None else box.to(pos.dtype)
        edge_index, image = self._edge_index, self._image
        with torch.no_grad():
            keep = within_cutoffs(pos, boxc, batch, edge_index[0], edge_index[1], image, cl, cu)
            if loop:
                keep |= (edge_index[0] == edge_index[1]) & (image == 0).all(dim=1)
            if not bool(keep.all()):
                sel = keep.nonzero().squeeze(1)
                edge_index, image = edge_index.index_select(1, sel), image.index_select(0, sel)
        edge_vec = edge_vectors(pos, boxc, batch, edge_index[0], edge_index[1], image)
        return NeighborList(edge_index, edge_vec, safe_norm(edge_vec), image)


class VerletNeighborTable(_SkinCache):
    """Drop-in for :func:`fastnnp.kernels.common.neighbor_search.neighbor_table` that returns the
    table of the widened cutoffs (module docstring) while it is valid.

    No re-filtering: the Triton kernels weight every edge by TorchMD-Net's cosine cutoff, whose
    value and slope are exactly 0 for ``d >= cutoff_upper`` and, with a lower cutoff, for
    ``d <= cutoff_lower``, so the extra pairs add exact zeros to energies, forces and stress.
    The table built with wider cutoffs is still symmetric (i lists j iff j lists i with the
    opposite image). Results equal those of a fresh table up to float rounding, not bit for
    bit: the extra slots change the order of the kernels' sums. A cached table is reused when
    it is at least ``capacity`` wide; ``builds`` counts the searches.
    """

    def __init__(self, skin: float):
        super().__init__(skin)
        self._table = None

    def __call__(
        self,
        pos: Tensor,
        batch: Tensor,
        cutoff_upper: float,
        cutoff_lower: float = 0.0,
        box: Optional[Tensor] = None,
        capacity: Optional[int] = None,
    ) -> NeighborTable:
        pos, batch, box, _, cu, cl = check_search_inputs(pos, batch, cutoff_upper, cutoff_lower, box, None)
        settings = (cu, cl)
        wide_enough = capacity is None or (self._table is not None and capacity <= self._table.neighbors.shape[1])
        if not (wide_enough and self._valid(pos, batch, box, settings)):
            upper, lower = self._widened(pos, box, cu, cl)
            self._table = _neighbor_table()(
                pos.detach(), batch, upper, lower, box=None if box is None else box.detach(), capacity=capacity
            )
            self._record(pos, batch, box, settings)
        return self._table


def _neighbor_table() -> Callable:
    """The plain Triton search, imported on use (Triton is an optional dependency)."""
    from ..kernels.common.neighbor_search import neighbor_table

    return neighbor_table


def _planned_table_search():
    """A Triton representation's own search hook (imported on use, like :func:`_neighbor_table`)."""
    from ..kernels.common.search_plan import PlannedTableSearch

    return PlannedTableSearch()


def _searches(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(module, attribute name) of every neighbour search hook in ``model``: ``neighbor_search``
    (a :func:`neighbor_list`-like callable: representations, the ZBL and D2 priors) and
    ``table_search`` (a ``neighbor_table``-like callable: Triton representations)."""
    for module in model.modules():
        for name in ("neighbor_search", "table_search"):
            if hasattr(module, name):
                yield module, name


def use_verlet_skin(model: nn.Module, skin: float) -> None:
    """Give every neighbour search in ``model`` (of the representations TensorNet, ET, GN,
    TritonTensorNet and of the priors ZBL and D2, also inside ensembles) its own Verlet cache
    with ``skin`` (length units); ``skin=0`` restores the plain searches (the planned search,
    :mod:`fastnnp.kernels.common.search_plan`, for Triton representations). Raises ValueError
    for a negative or non-finite ``skin``."""
    skin = check_skin(skin)
    for module, name in _searches(model):
        if name == "neighbor_search":
            setattr(module, name, VerletNeighborList(skin) if skin > 0 else neighbor_list)
        else:
            setattr(module, name, VerletNeighborTable(skin) if skin > 0 else _planned_table_search())


def neighbor_builds(model: nn.Module) -> int:
    """Total number of neighbour searches run by the Verlet caches in ``model``."""
    return sum(
        getattr(module, name).builds
        for module, name in _searches(model)
        if isinstance(getattr(module, name), _SkinCache)
    )
