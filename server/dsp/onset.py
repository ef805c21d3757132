"""The detector's result type."""

from __future__ import annotations

import dataclasses


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
    """

    time: float
    strength: float
