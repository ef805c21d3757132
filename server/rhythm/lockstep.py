"""Trackers that step together, frame by frame: their scalar state as rows of arrays.

In a live batch every stream usually sends one tracker frame per call (a 20 ms block: two 10 ms values),
and the same streams step together call after call. :class:`Lockstep` then keeps those trackers' counters,
running means and last beats as rows of arrays beside their :class:`~server.rhythm.statespace.RingBank`
(row ``i`` of each is the tracker ``trackers[i]``), so a batch's framing, likelihood ratios and beat checks
are a few numpy calls instead of a Python loop per stream. The operations are the trackers' own, value by
value (:meth:`BeatTracker._take_values`, ``_before_step``, ``_after_step``), so the beats are bitwise the
same; only the likelihood ratio's power stays in Python (numpy's ``power`` rounds differently from
Python's ``**`` for some values).

While a tracker is in a lockstep its own attributes are stale: :meth:`Lockstep.pull` copies its row back
(for ``tempo()`` and pickling), :meth:`Lockstep.release` hands every row back and ends the lockstep (when
the trackers step any other way, e.g. a frame split across calls, a stream that joins or leaves, or a
silence long enough to forget the tempo).
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from server.rhythm.beat import Beat
from server.rhythm.statespace import NORMALISE_FRAMES, RingBank
from server.rhythm.summary import tempo_summary

if TYPE_CHECKING:
    from server.rhythm.tracker import BeatTracker

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Trackers from which a lockstep pays: its ~25 numpy calls per frame cost about what 24 trackers' own
# Python does (measured: bench/README.md, rhythm_cost.py, fourth round)
MIN_TRACKERS = 32



class Lockstep:
    """The scalar state of ``trackers`` (all the rows of ``bank``, in its row order), one array per field."""

    def __init__(self, trackers: list[BeatTracker], bank: RingBank) -> None:
        self.trackers = trackers
        self.bank = bank
        self.rows = list(range(len(trackers)))
        first = trackers[0]
        space, per_frame = first._space, first._per_frame
        self._due_within = np.maximum(1, space.interval_of // 10)  # a beat may be due up to here after it
        self._half = space.interval_of / 2
        self._places = np.arange(1, per_frame + 1, dtype=np.int64)
        self.n_in: I64 = np.array([t._n_in for t in trackers], dtype=np.int64)
        self.step: I64 = np.array([t._step for t in trackers], dtype=np.int64)
        self.mean: F64 = np.array([t._mean for t in trackers], dtype=np.float64)
        # input values since the last one that reached `activity`, as of the last value in
        self.quiet: I64 = np.array([t._n_in - 1 - t._last_active for t in trackers], dtype=np.int64)
        self.best: I64 = np.array([t._best for t in trackers], dtype=np.int64)
        self.last_beat: I64 = np.array([t._last_beat for t in trackers], dtype=np.int64)
        for tracker in trackers:
            tracker._lock = self

    @classmethod
    def of(cls, trackers: list[BeatTracker]) -> Lockstep | None:
        """The lockstep of ``trackers`` (the one they are in, or a new one), or None when they cannot step
        as one: not all rows of one bank in its order, another state space or settings, a frame begun."""
        if len(trackers) < MIN_TRACKERS:
            return None
        first = trackers[0]
        lock = first._lock
        if (lock is not None and len(lock.trackers) == len(trackers)
                and all(a is b for a, b in zip(lock.trackers, trackers, strict=True))):
            return lock
        bank = first._bank
        if bank is None or len(bank.alpha) != len(trackers):
            return None
        space, settings, per_frame = first._space, first._settings, first._per_frame
        for row, tracker in enumerate(trackers):
            if (tracker._bank is not bank or tracker._row != row or tracker._space is not space
                    or tracker._per_frame != per_frame or tracker._n_in % per_frame
                    or tracker._alpha is None or tracker._settings != settings):
                return None
        for tracker in trackers:
            if tracker._lock is not None:
                tracker._lock.release()
        return cls(trackers, bank)

    def pull(self, tracker: BeatTracker) -> None:
        """Copy ``tracker``'s row into its attributes (it stays in the lockstep)."""
        row = tracker._row
        tracker._n_in = int(self.n_in[row])
        tracker._step = int(self.step[row])
        tracker._mean = float(self.mean[row])
        tracker._last_active = tracker._n_in - 1 - int(self.quiet[row])
        tracker._best = int(self.best[row])
        tracker._last_beat = int(self.last_beat[row])

    def release(self) -> None:
        """Hand every row back to its tracker and end the lockstep."""
        for tracker in self.trackers:
            if tracker._lock is self:
                self.pull(tracker)
                tracker._lock = None

    def advance(self, values: F64) -> list[list[Beat]] | None:
        """One frame for every tracker, ``values`` of shape (n_trackers, per_frame) (validated); each
        tracker's beats. None, with nothing changed, when a tracker would forget its tempo (a long silence:
        that is the trackers' own path)."""
        first = self.trackers[0]
        settings, per_frame, space = first._settings, first._per_frame, first._space
        # BeatTracker._take_values of one whole frame: its strength, and the values since an active one
        last = ((values >= settings.activity) * self._places).max(axis=1)  # 1 + the last active's place, or 0
        quiet = np.where(last, per_frame - last, self.quiet + per_frame)
        if quiet.max() >= first._reset_after:
            return None
        self.quiet = quiet
        self.n_in += per_frame
        strength = values.max(axis=1)
        # BeatTracker._before_step
        step = self.step = self.step + 1
        mean = self.mean = self.mean + first._mean_rate * (strength - self.mean)
        z = np.zeros(len(mean))
        np.divide(strength, settings.reference * mean, out=z, where=mean > 0.0)
        np.minimum(z, settings.cap, out=z)
        z += settings.floor
        z /= 1.0 + settings.floor
        ratios = list(map(pow, z.tolist(), repeat(settings.sharpness, len(z))))
        normalise = np.flatnonzero(step % NORMALISE_FRAMES == 0).tolist()
        best = self.best = self.bank.step_rows(self.rows, ratios, normalise)
        # BeatTracker._after_step, for the rows on or just after a beat, no sooner than half an interval
        # after the last one
        position = space.position_of[best]
        position += step
        position %= space.interval_of[best]
        beat_frame = step - position
        due = position <= self._due_within[best]
        due &= beat_frame - self.last_beat >= self._half[best]
        beats: list[list[Beat]] = [[] for _ in self.trackers]
        for row in np.flatnonzero(due).tolist():
            if quiet[row] >= first._hold:
                continue
            tracker = self.trackers[row]
            at = int(step[row])
            values_ = tempo_summary(space, self.bank.alpha[row], int(best[row]), at)
            tracker._summary_step, tracker._summary_values = at, values_
            bpm, confidence = values_
            if confidence < settings.min_confidence:
                continue
            frame = int(beat_frame[row])
            self.last_beat[row] = frame
            index: float
            strongest = values[row].tolist()
            if int(position[row]) == 0 and max(strongest) >= settings.activity:
                # the strongest input value of the beat's frame
                index = int(self.n_in[row]) - per_frame + strongest.index(max(strongest))
            else:
                index = frame * per_frame + (per_frame - 1) / 2
            beats[row].append(Beat(time=tracker._time_of(index), bpm=bpm, confidence=confidence))
        return beats
