"""Meter and downbeat, causally, from the accent of each committed beat: each beat's ``bar_position``.

For each candidate meter (3 and 4 beats per bar) and each position in its bar, exponentially forgetting sums
of the beats' low-band and mid-band peak rises are kept; a position's accent is its mean low peak over the
mean of all positions less the same for mid (a kick rather than a snare, each band against its own level).
A meter whose bar has one position clearly above its others explains the accents; a meter
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

import math
from collections.abc import Callable, Sequence

METERS = (3, 4)  # beats per bar that are considered
DECAY_PER_BEAT = 0.97  # accents are forgotten with this factor per beat (memory ~ 33 beats)
MIN_BEATS = 8  # no bar position before this many beats since the last reset
MIN_CONTRAST = 0.3  # committed when the best position's accent beats the others' mean by this
SWITCH_MARGIN = 0.2  # a committed meter and downbeat change only for a contrast this much higher
RESET_GAP_BEATS = 8.0  # a gap longer than this many beat intervals forgets everything
OFF_GRID_BEATS = 0.25  # so does a beat further than this from a whole number of intervals after the last
BEFORE_FRAMES = 2  # a beat's accent looks at rises from this many frames before its frame...
AFTER_FRAMES = 2  # ...to this many after (folded in once those frames are in)


def peaks_of(sums: Sequence[float], frame: int, before: int = BEFORE_FRAMES,
             after: int = AFTER_FRAMES) -> tuple[float, float]:
    """A beat's ``(low, mid)`` peaks from group rises (:func:`~server.rhythm.features.group_sums`: low, mid
    and high of each frame after those of the frame before, flat): the largest low and mid rise from
    ``before`` frames before ``frame`` to ``after`` frames after it (frames outside ``sums`` are left out)."""
    start, stop = 3 * max(0, frame - before), 3 * max(0, frame + after + 1)
    low, mid = sums[start:stop:3], sums[start + 1:stop:3]
    if len(low) == 0:
        return 0.0, 0.0
    return float(max(low)), float(max(mid))


def _total(values: list[float]) -> float:
    """``values`` summed left to right: numpy's ``sum`` of so few float64 values, bit for bit."""
    total = values[0]
    for value in values[1:]:
        total += value
    return total


def position_accents(low: list[float], mid: list[float], weights: list[float]) -> list[float] | None:
    """Accent of each bar position from decayed per-position sums of the beats' low and mid peaks and the
    positions' decayed beat counts: the position's mean low peak over the mean over all positions, less the
    same for mid (a kick rather than a snare, each band against its own level; dimensionless, about 1 for
    a typical beat). None while a position has no beat or a band never rose. Plain floats: a bar has 3 or
    4 positions, far too few for numpy to pay."""
    if min(weights) <= 0.0:
        return None
    total = _total(weights)
    mean_low, mean_mid = _total(low) / total, _total(mid) / total
    if mean_low <= 0.0 or mean_mid <= 0.0:
        return None
    return [(lo / w) / mean_low - (mi / w) / mean_mid for lo, mi, w in zip(low, mid, weights, strict=True)]


def position_contrast(accents: list[float], position: int) -> float:
    """Bar ``position``'s accent (0-based) less the mean of the others'."""
    others = accents[:position] + accents[position + 1:]
    return accents[position] - _total(others) / len(others)


def contrast(accents: list[float]) -> tuple[float, int]:
    """``(contrast, position)``: the strongest bar position's accent less the others' mean (0-based; the
    first of equals)."""
    best = accents.index(max(accents))
    return position_contrast(accents, best), best


class BeatCount:
    """The index of each of one stream's committed beats, and the beats whose accent is not in yet.

    Indices follow the beat times (a missed beat still counts); a gap of over ``RESET_GAP_BEATS`` intervals
    or a beat further than ``OFF_GRID_BEATS`` from the last one's grid starts the count afresh; with
    ``both_tempi``, so does a beat whose count of beats since the last is not the same at the last beat's
    tempo as at its own (the tempo moved by a beat or more in between: on a start-up's unsettled tempo the
    count would be a beat off for good). A beat's
    accent (:func:`peaks_of`) is handed over by :meth:`fold` once the rises up to ``AFTER_FRAMES`` after it
    are in, so what is built on it does not depend on how the audio was cut into blocks.
    """

    def __init__(self, *, both_tempi: bool = False) -> None:
        self._both_tempi = both_tempi
        self.reset()

    def reset(self) -> None:
        self.index = -1  # index of the last beat
        self.last_s: float | None = None
        self.last_bpm = 0.0  # the tempo at the last beat, beats per minute
        self.pending: list[tuple[int, int]] = []  # (beat index, frame) of beats whose accent is not in yet

    def add(self, time_s: float, bpm: float, frame: int) -> bool:
        """Count a beat at ``time_s`` (s) with the tracker's ``bpm`` whose rises are around ``frame``; whether
        the count started afresh with it."""
        last_s = self.last_s
        steps = 1.0 if last_s is None else (time_s - last_s) * bpm / 60.0
        off_grid = abs(steps - round(steps)) > OFF_GRID_BEATS
        if self._both_tempi and last_s is not None:  # the same interval in beats of the last beat's tempo
            off_grid |= round((time_s - last_s) * self.last_bpm / 60.0) != round(steps)
        restart = last_s is not None and (steps > RESET_GAP_BEATS or off_grid or round(steps) < 1)
        if restart:
            self.reset()  # a gap, or a beat off the last one's grid: the count is lost
        self.index = 0 if self.last_s is None else self.index + round(steps)
        self.last_s, self.last_bpm = time_s, bpm
        self.pending.append((self.index, frame))
        return restart

    def fold(self, sums: Sequence[float], first_frame: int,
             observe: Callable[[int, float, float], None]) -> None:
        """``observe(index, low, mid)`` for every waiting beat whose frames are in ``sums`` (group rises,
        flat: low, mid, high of frame ``first_frame``, then of the next, ...), oldest first."""
        end = first_frame + len(sums) // 3
        pending = self.pending
        while self.due(end):
            index, frame = pending.pop(0)
            observe(index, *peaks_of(sums, frame - first_frame))

    def due(self, end_frame: int) -> bool:
        """Whether the oldest waiting beat's accent can be folded in once the frames before ``end_frame``
        are in (its rises up to ``AFTER_FRAMES`` after it)."""
        pending = self.pending
        return bool(pending) and pending[0][1] + AFTER_FRAMES < end_frame


class MeterTracker:
    """Bar positions of one stream's beats, as they are committed.

    A beat's position comes from the accents of the beats before it; its own accent is folded in once the
    rises up to ``AFTER_FRAMES`` after it are in (:meth:`fold`), so the positions do not depend on how the
    audio was cut into blocks.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = BeatCount(both_tempi=True)
        self._forget()

    def _forget(self) -> None:
        self._beats = 0  # accents folded in since the last reset
        # per meter, per position in its bar: decayed sums of the beats' low and mid peaks, and of beats
        self._low = {m: [0.0] * m for m in METERS}
        self._mid = {m: [0.0] * m for m in METERS}
        self._weights = {m: [0.0] * m for m in METERS}
        self._meter: int | None = None
        self._downbeat = 0  # the index modulo meter of a downbeat

    @property
    def meter(self) -> int | None:
        """Beats per bar, once committed."""
        return self._meter

    def beat(self, time_s: float, bpm: float, frame: int) -> int | None:
        """The bar position (1 = downbeat) of a beat at ``time_s`` (s) with the tracker's ``bpm``, whose rises
        are around ``frame``, or None while the meter is not known. Call :meth:`fold` first."""
        if self.count.add(time_s, bpm, frame):
            self._forget()
        if self._meter is None:
            return None
        return (self.count.index - self._downbeat) % self._meter + 1

    def fold(self, sums: Sequence[float], first_frame: int) -> None:
        """Fold in the accent of every waiting beat whose frames are in ``sums`` (:meth:`BeatCount.fold`)."""
        self.count.fold(sums, first_frame, self.observe)

    def observe(self, index: int, low: float, mid: float) -> None:
        """Fold in the ``low`` and ``mid`` peaks of the beat with ``index`` and decide the meter again."""
        self._beats += 1
        for m in METERS:
            lows, mids = self._low[m], self._mid[m]
            weights = self._weights[m]
            for i in range(m):
                lows[i] *= DECAY_PER_BEAT
                mids[i] *= DECAY_PER_BEAT
                weights[i] *= DECAY_PER_BEAT
            lows[index % m] += low
            mids[index % m] += mid
            weights[index % m] += 1.0
        self._decide()

    def _accents(self, meter: int) -> list[float] | None:
        return position_accents(self._low[meter], self._mid[meter], self._weights[meter])

    def _decide(self) -> None:
        if self._beats < MIN_BEATS:
            return
        best: tuple[float, int, int] = (-math.inf, 0, 0)
        every: dict[int, list[float] | None] = {}
        for m in METERS:
            accents = every[m] = self._accents(m)
            if accents is not None:
                value, position = contrast(accents)
                if value > best[0]:
                    best = (value, m, position)
        value, meter, position = best
        if self._meter is None:
            if value >= MIN_CONTRAST:
                self._meter, self._downbeat = meter, position
            return
        accents = every[self._meter]
        current = -math.inf if accents is None else position_contrast(accents, self._downbeat)
        if (meter, position) != (self._meter, self._downbeat) and value >= current + SWITCH_MARGIN:
            self._meter, self._downbeat = meter, position
