"""A file job's beat tracking in pool calls of its own, beside the turns that run its detector.

With two workers or more, a job with ``beats`` runs its detector, the band features and the onset bands in
turns of :func:`server.jobs.work.analyse_turn` (``split_beats``), and each turn hands over the beat strength
and group sums of its frames; :func:`track_turn` runs the sequential beat tracker (and the beats' level and
bar positions) on them, in another worker, while the next detector turn runs. The beats are bitwise those of
one session doing both (:meth:`~server.rhythm.RhythmSession.track`).

A turn here obeys the same rule as the detector's: it runs steps of at most :data:`STEP_FRAMES` frames for
up to ``turn_s``, and ends after the current step as soon as another call waits for its worker
(:func:`~server.pool.worker.calls_waiting`), so a live stream's block waits for at most one step.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from server.jobs.model import ErrorCode, JobError
from server.jobs.result import encode_beats
from server.pool.worker import calls_waiting
from server.rhythm import RhythmSession

STEP_FRAMES = 500  # frames (10 ms hops) per step: 5 s of audio, ~2 ms of tracking
TURN_S = 0.2  # longest run of steps in one pool call while no other call waits for the worker, s


@dataclass(slots=True)
class BeatTurnOutcome:
    """The beat side after a turn, how many of the frames given it used (the rest are for the next turn),
    and the beats it committed to, encoded as JSON array items, with their times."""

    session: RhythmSession
    frames_used: int = 0
    beats_json: str = ""
    beat_times_s: list[float] = field(default_factory=list)
    error: JobError | None = None
    trace: str | None = None


def track_turn(session: RhythmSession, strengths: np.ndarray, sums: np.ndarray,
               turn_s: float = TURN_S) -> BeatTurnOutcome:
    """Track the frames of ``strengths`` (float64, one a frame) and ``sums`` (three a frame), in order, in
    steps, for up to ``turn_s`` or until another call waits. Failures come back in ``error``."""
    deadline_s = time.monotonic() + turn_s
    values, sums_list = strengths.tolist(), sums.tolist()
    frames, used = len(values), 0
    beats: list[tuple[float, int | None]] = []
    try:
        while used < frames:
            stop = min(frames, used + STEP_FRAMES)
            found = session.track(values[used:stop], sums_list[3 * used : 3 * stop])
            beats += [(beat.time, beat.bar_position) for beat in found]
            used = stop
            if time.monotonic() >= deadline_s or calls_waiting():
                break
        return BeatTurnOutcome(session, used, encode_beats(beats), [time_s for time_s, _ in beats])
    except Exception as exc:
        return BeatTurnOutcome(session, used, error=JobError(ErrorCode.INTERNAL.value,
                                                             f"beat tracking failed: {exc!r}"),
                               trace=traceback.format_exc())
