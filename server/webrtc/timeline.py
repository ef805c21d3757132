"""Where each received frame belongs on the stream's time line, by its RTP clock.

A frame's ``pts`` (in ``time_base`` units, from aiortc's unwrapped RTP timestamp) says when its first
sample was captured. Packets lost in the network, discontinuous transmission and a jitter buffer that
skips a late packet all show up as a ``pts`` ahead of the samples received so far: the gap is filled with
that much silence, so every later onset keeps its capture time. A frame that starts before the end of
what was already placed (a duplicate or overlapping frame) loses its overlapping head.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

MAX_GAP_S = 60.0  # a gap longer than this is a clock discontinuity, not lost audio: no silence inserted


@dataclass(frozen=True, slots=True)
class Placement:
    """What to do with one frame of ``samples`` samples before appending it.

    Attributes
    ----------
    silence : int
        Samples of silence to append first (the frame starts that far after the end of the time line).
    skip : int
        Samples to drop from the frame's head (already covered); equal to the frame's length when the
        whole frame lies in the past.
    jump_s : float
        Seconds of RTP time dropped from the time line at a clock discontinuity (0 normally).
    """

    silence: int = 0
    skip: int = 0
    jump_s: float = 0.0


class RtpTimeline:
    """The received time line of one track at ``sample_rate_hz``, in samples since the first frame."""

    def __init__(self, sample_rate_hz: int, max_gap_s: float = MAX_GAP_S) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.max_gap = round(max_gap_s * sample_rate_hz)
        self._origin: Fraction | None = None  # RTP time (s) of sample 0 of the time line
        self.end = 0  # samples on the time line so far (received plus inserted silence)
        self.inserted = 0  # samples of silence inserted so far

    def position(self, pts: int, time_base: Fraction) -> int:
        """The sample index on the time line of a frame stamped ``pts``."""
        time_s = pts * time_base
        if self._origin is None:  # the first stamped frame continues the time line where it ends
            self._origin = time_s - Fraction(self.end, self.sample_rate_hz)
        return round((time_s - self._origin) * self.sample_rate_hz)

    def place(self, pts: int, time_base: Fraction, samples: int) -> Placement:
        """Place a frame of ``samples`` samples stamped ``pts``; advances :attr:`end`."""
        start = self.position(pts, time_base)
        gap = start - self.end
        if gap > self.max_gap:
            # Re-anchor: this frame continues the time line where it ends now.
            assert self._origin is not None
            self._origin += Fraction(gap, self.sample_rate_hz)
            self.end += samples
            return Placement(jump_s=gap / self.sample_rate_hz)
        if gap >= 0:
            self.end += gap + samples
            self.inserted += gap
            return Placement(silence=gap)
        skip = min(samples, -gap)
        self.end += samples - skip
        return Placement(skip=skip)

    def append(self, samples: int) -> Placement:
        """Place a frame without a time stamp right after the last one."""
        self.end += samples
        return Placement()
