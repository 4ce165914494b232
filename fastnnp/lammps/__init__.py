"""fastnnp in LAMMPS.

* :mod:`.unified`: :class:`FastNNPUnified`, the ML-IAP unified model (``pair_style mliap unified``);
* :mod:`.pairs`: the model evaluated on LAMMPS's local + ghost atoms and pair list;
* :mod:`.exchange`: ghost features exchanged between domains after every message-passing step;
* :mod:`.export`: checkpoint -> model file (``fastnnp lammps-export``, :mod:`.cli`);
* :mod:`.library`: the ``lammps`` Python module with its MPI library loaded;
* :mod:`.fix_external`: a potential for ``fix external`` (no ML-IAP needed).
"""

from .export import build_unified, load_unified, save_unified
from .unified import FastNNPUnified

__all__ = ["FastNNPUnified", "build_unified", "load_unified", "save_unified"]
