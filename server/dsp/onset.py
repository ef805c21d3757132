"""The detector's result type."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Onset:
    """One detected onset.

    Attributes
    ----------
    time : float
        Attack time, seconds since the stream's first sample (a whole number of samples over the rate).
    strength : float
        Peak value of the detection function, in units of the method's calibrated step (dimensionless;
        comparable with ``threshold``).
    decided_s : float
        Without look-ahead: the end of the frame the detector decided the onset at, seconds (the stream's
        timeline), the last audio it was reported from (a band beside it, :mod:`server.rhythm`, is decided
        from the frames up to there); ``inf`` with a look-ahead. Not part of equality.
    """

    time: float
    strength: float
    decided_s: float = dataclasses.field(default=math.inf, compare=False)
