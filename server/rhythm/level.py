"""Metrical level: whether the tracker beats twice as fast as the music, and which of its beats to keep.

With eighth-note hi-hats at 70–100 BPM, the hats give every eighth note an onset, and the beat tracker can
lock to the eighth notes (140–200 BPM): every second "beat" is then a hat alone. The kick and the snare
tell the levels apart: at the music's tempo every beat carries one of them, at twice it only every second
one does. So, for the tracker's beats, exponentially forgetting sums of each beat's low-band and mid-band
peak rise (the meter's accents, :func:`~server.rhythm.meter.peaks_of`) are kept for even and odd beats; a
parity's strength is its mean low peak over the mean of both, plus the same for mid. When the weaker
parity's strength falls below ``HALVE_BELOW`` times the stronger's, at a tracked tempo of at least
``MIN_HALVE_BPM``, the level halves: only the stronger parity's beats are reported, at half the tempo. It
goes back once the parities' strengths come within ``RESTORE_ABOVE`` of each other.

Like :class:`~server.rhythm.meter.MeterTracker`, a beat is kept or dropped when the tracker commits to it,
from the accents of the beats before it (its own is folded in once the frames after it are in), so the
result does not depend on how the audio was cut into blocks. Plain Python floats: a handful of values per
beat.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.rhythm.meter import BeatCount

DECAY_PER_BEAT = 0.95  # accents are forgotten with this factor per tracked beat (memory ~ 20 beats)
MIN_BEATS = 8  # the level is not changed before this many tracked beats since the last reset
MIN_HALVE_BPM = 130.0  # only a tracked tempo at least this fast is halved (eighth notes of 65 BPM and up)
HALVE_BELOW = 0.35  # halve when the weaker parity's strength is below this share of the stronger's
RESTORE_ABOVE = 0.6  # go back to every beat once it is above this share
SLOW_SHARE = 0.75  # while halved, a tracked tempo under this share of the eighth notes' is the music's own


class MetricalLevel:
    """Which of one stream's tracked beats are the music's beats (all, or every second one)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = BeatCount()  # of the tracked beats
        self._forget()
        self._bpm = 0.0  # the tracker's tempo at the last beat, beats per minute

    def _forget(self) -> None:
        self._beats = 0  # accents folded in since the last reset
        self._low = [0.0, 0.0]  # per parity of the beat index: decayed sums of low peaks,
        self._mid = [0.0, 0.0]  # of mid peaks,
        self._weight = [0.0, 0.0]  # and of beats
        self._halved = False
        self._keep = 0  # the parity kept while halved
        self._fast_bpm = 0.0  # while halved, the tracker's tempo at its last beat on the eighth notes
        self._slow_beats = 0  # while halved, the tracker's beats at the music's tempo since then

    @property
    def factor(self) -> int:
        """Tracked beats per reported beat at the last one: 1, or 2 while halved and the tracker is on the
        eighth notes."""
        return 2 if self._halved and self._slow_beats == 0 else 1

    def beat(self, time_s: float, bpm: float, frame: int) -> bool:
        """Whether the tracked beat at ``time_s`` (s, tempo ``bpm``), whose rises are around ``frame``, is
        reported. Call :meth:`fold` first.

        While halved, the beats are counted in eighth notes even when the tracker itself goes to the music's
        tempo (under ``SLOW_SHARE`` of its last tempo on the eighth notes: each of its beats is then two
        counts, and kept), so when it goes back to the eighth notes their parity is still the one of the
        beats; after ``MIN_BEATS`` beats in a row at the music's tempo the level starts afresh there."""
        eighths = self._halved and bpm < SLOW_SHARE * self._fast_bpm
        if self.count.add(time_s, 2.0 * bpm if eighths else bpm, frame):
            self._forget()
            eighths = False
        self._bpm = bpm
        if eighths:
            self._slow_beats += 1
            if self._slow_beats >= MIN_BEATS:  # the tracker stays on the music's beats: count those
                self._forget()
            return True
        self._slow_beats = 0
        if self._halved:
            self._fast_bpm = bpm
        return not self._halved or self.count.index % 2 == self._keep

    def skips_next(self, time_s: float, bpm: float) -> bool:
        """Whether a tracked beat predicted at ``time_s`` (s) would be dropped."""
        last_s = self.count.last_s
        if self.factor == 1 or last_s is None:
            return False
        return (self.count.index + round((time_s - last_s) * bpm / 60.0)) % 2 != self._keep

    def fold(self, sums: Sequence[float], first_frame: int) -> None:
        """Fold in the accent of every waiting beat whose frames are in ``sums`` (:meth:`BeatCount.fold`)."""
        self.count.fold(sums, first_frame, self.observe)

    def observe(self, index: int, low: float, mid: float) -> None:
        """Fold in the ``low`` and ``mid`` peaks of the tracked beat ``index``; decide the level again."""
        self._beats += 1
        parity = index % 2
        for sums, value in ((self._low, low), (self._mid, mid), (self._weight, 1.0)):
            sums[0] *= DECAY_PER_BEAT
            sums[1] *= DECAY_PER_BEAT
            sums[parity] += value
        if self._beats < MIN_BEATS:
            return
        shares = parity_strengths(self._low, self._mid, self._weight)
        if shares is None:
            return
        strong = 0 if shares[0] >= shares[1] else 1
        ratio = shares[1 - strong] / shares[strong] if shares[strong] > 0.0 else 1.0
        if not self._halved and ratio < HALVE_BELOW and self._bpm >= MIN_HALVE_BPM:
            self._halved, self._keep, self._fast_bpm = True, strong, self._bpm
        elif self._halved and ratio > RESTORE_ABOVE:
            self._halved = False


def parity_strengths(low: list[float], mid: list[float], weight: list[float]) -> tuple[float, float] | None:
    """Each parity's strength from decayed sums of its beats' low and mid peaks and of its beats: its mean
    low peak over the mean of both parities, plus the same for mid (dimensionless, 2 for a parity like the
    mean). None while a parity has no beat or a band never rose."""
    if weight[0] <= 0.0 or weight[1] <= 0.0:
        return None
    total = weight[0] + weight[1]
    mean_low, mean_mid = (low[0] + low[1]) / total, (mid[0] + mid[1]) / total
    if mean_low <= 0.0 or mean_mid <= 0.0:
        return None
    even, odd = (low[p] / weight[p] / mean_low + mid[p] / weight[p] / mean_mid for p in (0, 1))
    return even, odd
