"""Meter and downbeat, causally, from the accent of each committed beat: each beat's ``bar_position``.

For each candidate meter (3 and 4 beats per bar) and each position in its bar, an exponentially forgetting
mean of the beats' accents (the low band's rise minus the mid band's around the beat: a kick rather than a
snare) is kept. A meter whose bar has one position clearly above its others explains the accents; a meter
that does not divide the music's bar sees them averaged out. Once enough beats are in and the best meter's
contrast is clear, the meter and the downbeat (its strongest position) are committed; a committed guess is
replaced only by a clearly better one. A beat's position is decided when the tracker commits to it, from the
beats before it (its own accent is not in yet then). Beat indices follow the beat times (a missed beat still
counts); a long gap, or a beat off the grid of the one before (the tracker still finding the tempo, or a
tempo change), forgets everything.

Kick on 1 and 3, snare on 2 and 4 tells a bar's halves apart only by how much louder the first kick is: on
real drum kits the downbeat is often put on beat 3 (see bench/downbeats.py for the measured figures).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

METERS = (3, 4)  # beats per bar that are considered
DECAY_PER_BEAT = 0.97  # accents are forgotten with this factor per beat (memory ~ 33 beats)
MIN_BEATS = 8  # no bar position before this many beats since the last reset
MIN_CONTRAST = 0.3  # committed when the best position beats the others' mean by this (in mean |accent|)
SWITCH_MARGIN = 0.2  # a committed meter and downbeat change only for a contrast this much higher
RESET_GAP_BEATS = 8.0  # a gap longer than this many beat intervals forgets everything
OFF_GRID_BEATS = 0.25  # so does a beat further than this from a whole number of intervals after the last
BEFORE_FRAMES = 2  # a beat's accent looks at rises from this many frames before its frame...
AFTER_FRAMES = 2  # ...to this many after (folded in once those frames are in)


def accent_of(rises: npt.NDArray[np.float32], frame: int, before: int = BEFORE_FRAMES,
              after: int = AFTER_FRAMES) -> float:
    """A beat's accent from group rises (shape (n_frames, 3): low, mid, high): the largest low rise minus
    the largest mid rise from ``before`` frames before ``frame`` to ``after`` frames after it (frames outside
    ``rises`` are left out)."""
    window = rises[max(0, frame - before): max(0, frame + after + 1)]
    if len(window) == 0:
        return 0.0
    return float(window[:, 0].max() - window[:, 1].max())


def contrast(sums: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]) -> tuple[float, int]:
    """``(contrast, position)``: the strongest bar position's mean accent less the others' mean (0-based
    position), from per-position decayed sums and weights; ``(0, 0)`` while a position has no beat."""
    if np.any(weights <= 0.0):
        return 0.0, 0
    means = sums / weights
    best = int(np.argmax(means))
    others = np.delete(means, best)
    return float(means[best] - others.mean()), best


class MeterTracker:
    """Bar positions of one stream's beats, as they are committed.

    A beat's position comes from the accents of the beats before it; its own accent is folded in once the
    rises up to ``AFTER_FRAMES`` after it are in (:meth:`fold`), so the positions do not depend on how the
    audio was cut into blocks.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._index = -1  # index of the last beat
        self._last_s: float | None = None
        self._beats = 0  # accents folded in since the last reset
        self._pending: list[tuple[int, int]] = []  # (beat index, frame) of beats whose accent is not in yet
        self._scale = 0.0  # decayed sum of |accent|, for the contrast's unit
        self._scale_weight = 0.0
        self._sums = {m: np.zeros(m) for m in METERS}
        self._weights = {m: np.zeros(m) for m in METERS}
        self._meter: int | None = None
        self._downbeat = 0  # the index modulo meter of a downbeat
        self._contrast = 0.0

    @property
    def meter(self) -> int | None:
        """Beats per bar, once committed."""
        return self._meter

    def beat(self, time_s: float, bpm: float, frame: int) -> int | None:
        """The bar position (1 = downbeat) of a beat at ``time_s`` (s) with the tracker's ``bpm``, whose rises
        are around ``frame``, or None while the meter is not known. Call :meth:`fold` first."""
        steps = 1.0 if self._last_s is None else (time_s - self._last_s) * bpm / 60.0
        if self._last_s is not None and (steps > RESET_GAP_BEATS or abs(steps - round(steps)) > OFF_GRID_BEATS
                                         or round(steps) < 1):
            self.reset()  # a gap, or a beat off the last one's grid: the count is lost
        if self._last_s is None:
            self._index = 0
        else:
            self._index += round(steps)
        self._last_s = time_s
        self._pending.append((self._index, frame))
        if self._meter is None:
            return None
        return (self._index - self._downbeat) % self._meter + 1

    def fold(self, rises: npt.NDArray[np.float32], first_frame: int) -> None:
        """Fold in the accent of every waiting beat whose frames are in ``rises`` (shape (n, 3), frame
        ``first_frame`` first)."""
        end = first_frame + len(rises)
        while self._pending and self._pending[0][1] + AFTER_FRAMES < end:
            index, frame = self._pending.pop(0)
            self.observe(index, accent_of(rises, frame - first_frame))

    def observe(self, index: int, accent: float) -> None:
        """Fold in the ``accent`` of the beat with ``index`` and decide the meter again."""
        self._beats += 1
        self._scale = DECAY_PER_BEAT * self._scale + abs(accent)
        self._scale_weight = DECAY_PER_BEAT * self._scale_weight + 1.0
        for m in METERS:  # new arrays, not in place: unpickled from the pool, arrays may be read-only
            sums, weights = self._sums[m] * DECAY_PER_BEAT, self._weights[m] * DECAY_PER_BEAT
            sums[index % m] += accent
            weights[index % m] += 1.0
            self._sums[m], self._weights[m] = sums, weights
        self._decide()

    def _decide(self) -> None:
        if self._beats < MIN_BEATS or self._scale <= 0.0:
            return
        unit = self._scale / self._scale_weight
        best: tuple[float, int, int] = (-np.inf, 0, 0)
        for m in METERS:
            value, position = contrast(self._sums[m], self._weights[m])
            if value / unit > best[0]:
                best = (value / unit, m, position)
        value, meter, position = best
        if self._meter is None:
            if value >= MIN_CONTRAST:
                self._meter, self._downbeat, self._contrast = meter, position, value
            return
        self._contrast = self._score(self._meter, self._downbeat) / unit
        if (meter, position) != (self._meter, self._downbeat) and value >= self._contrast + SWITCH_MARGIN:
            self._meter, self._downbeat, self._contrast = meter, position, value

    def _score(self, meter: int, position: int) -> float:
        sums, weights = self._sums[meter], self._weights[meter]
        if np.any(weights <= 0.0):
            return 0.0
        means = sums / weights
        return float(means[position] - np.delete(means, position).mean())
