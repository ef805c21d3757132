"""The beat tracker's result types."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Beat:
    """One beat, reported as soon as the tracker commits to it.

    Attributes
    ----------
    time : float
        Beat time, seconds on the stream's timeline (like an onset's).
    bpm : float
        Tempo when the beat was committed, beats per minute.
    confidence : float
        Probability mass of the tracker's tempo and phase near this beat's, 0–1.
    bar_position : int or None
        Position in the bar, 1 = downbeat; None while the meter is not known.
    """

    time: float
    bpm: float
    confidence: float
    bar_position: int | None = None


@dataclasses.dataclass(frozen=True)
class Tempo:
    """The tracker's current tempo, for scheduling ahead of the beat.

    Attributes
    ----------
    bpm : float
        Beats per minute.
    confidence : float
        0–1, as :attr:`Beat.confidence`.
    next_beat_time : float
        Predicted time of the next beat, seconds on the stream's timeline.
    """

    bpm: float
    confidence: float
    next_beat_time: float
