"""What a step found on the device and the host acts on after it (:mod:`fastnnp.step`)."""

from enum import IntFlag

from torch import Tensor


class StepStatus(IntFlag):
    """Bits of a step's 0-d int32 status tensor."""

    OVERFLOW = 1  # some atom has more neighbours than the table is wide: recompute with a wider table
    STALE = 2  # a periodic cell's search bins became narrower than the cutoff: replan, recompute
    DRIFT = 4  # atoms of an open system left the planned search grid: result right, replan for speed
    NONFINITE = 8  # a position or cell entry is not finite: an error, reported after the step
    CLOSE = 16  # two atoms closer than fastnnp.validation.MIN_DISTANCE: an error naming them, after the step

    @property
    def recompute(self) -> bool:
        """Whether the step's results are incomplete and must be computed again after a replan."""
        return bool(self & (StepStatus.OVERFLOW | StepStatus.STALE))


def status_tensor(flags: dict[StepStatus, Tensor]) -> Tensor:
    """A 0-d int32 device status from 0-d bool tensors, one per bit: no host sync."""
    status = None
    for bit, flag in flags.items():
        term = flag.int() * int(bit)
        status = term if status is None else status | term
    return status


def is_planned(hook: object) -> bool:
    """Whether a representation's search hook keeps a device status and replans after it (the
    planned Triton search, :mod:`fastnnp.kernels.common.search_plan`; not a Verlet cache or
    LAMMPS's pairs)."""
    return hasattr(hook, "status") and hasattr(hook, "replan")
