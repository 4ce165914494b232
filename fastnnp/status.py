"""What a step found on the device and the host acts on after it (:mod:`fastnnp.step`)."""

from enum import IntFlag


class StepStatus(IntFlag):
    """Bits of a step's 0-d int32 status tensor."""

    OVERFLOW = 1  # some atom has more neighbours than the table is wide: recompute with a wider table
    STALE = 2  # a periodic cell's search bins became narrower than the cutoff: replan, recompute
    DRIFT = 4  # atoms of an open system left the planned search grid: result right, replan for speed
    NONFINITE = 8  # a position or cell entry is not finite: an error, reported after the step

    @property
    def recompute(self) -> bool:
        """Whether the step's results are incomplete and must be computed again after a replan."""
        return bool(self & (StepStatus.OVERFLOW | StepStatus.STALE))
