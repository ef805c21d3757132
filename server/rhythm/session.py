"""Rhythm for one stream beside its onset detector: beats, tempo, and the band of each onset.

:class:`RhythmSession` is the per-stream state kept next to an :class:`~server.dsp.OnsetDetector` (default
grid: 40 ms frames, 10 ms hop) whose row tap it turns on (``OnsetDetector.tap_rows``): each block it takes
the detector's ``take_odf()``, ``take_rows()`` (the filterbank magnitudes the detector computed anyway) and
onsets, and returns the beats committed to and each onset's band once the frames after it are in.
:func:`process_sessions` does that for many streams at once, in shared numpy passes (one front end, one
forward-filter step per frame for every tracker), with the same results as one by one.
:func:`analyze_rhythm` does a whole file.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from server.dsp import DetectorSettings, OnsetDetector
from server.dsp.onset import Onset
from server.rhythm.bands import SPAN_FRAMES, WEIGHTS, OnsetBands, attack_scores, peak_scores
from server.rhythm.beat import Beat, Tempo
from server.rhythm.features import FRAME_S, HOP_S, RISE_WEIGHT, BandGroups, grid_for, rise_totals
from server.rhythm.level import MetricalLevel
from server.rhythm.meter import AFTER_FRAMES, MeterTracker
from server.rhythm.settings import TrackerSettings
from server.rhythm.tracker import BeatTracker, advance_trackers

F32 = npt.NDArray[np.float32]


SMALL_BATCH = 24  # onset-strength values up to which a batch's beat strength is worked out in plain Python
KEEP_FRAMES = 64  # frames of group sums kept for onsets still waiting for their band (0.64 s at 10 ms)
BEAT_OFFSET_HOPS = (
    -1
)  # a beat's time is its frame's strongest value one hop earlier (calibrated on rhythm-dev)


@dataclasses.dataclass(frozen=True)
class BandedOnset:
    """An onset and where its attack is strongest: ``"low"``, ``"mid"`` or ``"high"``."""

    onset: Onset
    band: str


def follows_grid(detector: OnsetDetector) -> bool:
    """Whether ``detector`` uses the one grid :mod:`server.rhythm` follows (40 ms frames, 10 ms hop)."""
    settings = detector.settings
    return (settings.frame_ms, settings.hop_ms) == (1000 * FRAME_S, 1000 * HOP_S)


class RhythmSession:
    """Beats and onset bands of one stream, fed beside its detector from the detector's next frame on.

    Times are on the session's own timeline: the end of its frame ``k`` is ``(k + 1)`` hops, so a session
    started with its detector shares the detector's timeline (see :meth:`beside`).

    Parameters
    ----------
    sample_rate : int
    settings : TrackerSettings, optional
    after_silence : bool
        Whether the frame before the first one fed is silence (a stream's start); otherwise the first
        frame counts as no rise.

    Raises
    ------
    ValueError
        For a rate the detector would refuse (via the filterbank's grid).
    """

    def __init__(
        self, sample_rate: int, settings: TrackerSettings | None = None, *, after_silence: bool = True
    ) -> None:
        grid, bank, self._groups = grid_for(sample_rate)
        self.hop_s = grid.hop / sample_rate
        self.frame_time_offset_s = (grid.hop - grid.frame_len / 2) / sample_rate
        self._tracker = BeatTracker(self.hop_s, settings, time_offset_s=BEAT_OFFSET_HOPS * self.hop_s)
        self._bands = OnsetBands()  # bands from the frame centred on the attack (with a look-ahead)
        self._attack_bands = OnsetBands()  # bands from the attack's samples (without: AttackEvidence)
        self._level = MetricalLevel()  # which tracked beats are the music's (all, or every second one)
        self._meter = MeterTracker()  # each beat's bar position
        silence = np.zeros((1, bank.n_bands), dtype=np.float32)
        # The last row fed (None: none yet, mid-stream: the first row then counts as no rise).
        self._previous: F32 | None = silence if after_silence else None
        # group_sums of the last frames (KEEP_FRAMES to twice that), low, mid, high frame after frame: flat
        # float64 in an array, 8 bytes a value (a list of floats took 32, and a list per frame more: objects
        # the garbage collector must walk, again and again)
        self._sums = array("d")
        self._sums_first = 0  # frame index of self._sums[0:3]
        self._frames = 0
        # onsets waiting for their band, with their frame: the one centred on the attack, or with attack
        # evidence the one they were decided at
        self._pending: list[tuple[int, Onset]] = []

    @classmethod
    def beside(cls, detector: OnsetDetector, settings: TrackerSettings | None = None) -> RhythmSession:
        """A session for ``detector`` from its next frame on; turns its row tap on.

        Its frame 0 is the detector's frame ``detector.samples_in // hop``: session times plus that many
        hops are detector times.

        Raises
        ------
        ValueError
            When the detector does not use 40 ms frames and a 10 ms hop.
        """
        if not follows_grid(detector):
            raise ValueError(
                f"the detector must use {1000 * FRAME_S:g} ms frames and a {1000 * HOP_S:g} ms hop "
                f"(it uses {detector.settings.frame_ms:g} ms and {detector.settings.hop_ms:g} ms)"
            )
        session = cls(detector.sample_rate, settings, after_silence=detector.samples_in == 0)
        detector.tap_rows()
        return session

    @property
    def tracker(self) -> BeatTracker:
        return self._tracker

    def tempo(self) -> Tempo | None:
        """The current tempo (see :meth:`BeatTracker.tempo`), at the metrical level of the beats reported
        (:mod:`server.rhythm.level`): half the tracker's, and its next kept beat, while it is halved."""
        tempo = self._tracker.tempo()
        level = self._level
        if tempo is None or level.factor == 1:
            return tempo
        next_s = tempo.next_beat_time
        if level.skips_next(next_s, tempo.bpm):
            next_s += 60.0 / tempo.bpm
        return Tempo(bpm=tempo.bpm / 2, confidence=tempo.confidence, next_beat_time=next_s)

    def process(
        self, odf: npt.ArrayLike, rows: Sequence[F32] | F32, onsets: list[Onset]
    ) -> tuple[list[Beat], list[BandedOnset]]:
        """Feed the detector's ``take_odf()``, ``take_rows()`` and onsets after its latest block.

        Returns
        -------
        beats : list of Beat
            Beats committed to, in time order.
        banded : list of BandedOnset
            Onsets (of this or earlier blocks) whose band is now decided, in time order.

        Raises
        ------
        ValueError
            When there are fewer rows than ``odf`` values (the detector's tap was off, or blocks were
            skipped); the session is then unchanged.
        """
        return process_sessions([(self, odf, rows, onsets)])[0]

    def flush(self) -> list[BandedOnset]:
        """End of stream: the bands of the onsets still waiting (frames after the end count as no rise)."""
        return self._decide(final=True)

    def _placed(self, beats: list[Beat]) -> list[Beat]:
        """The tracker's new ``beats`` with their level and bar positions; or, with none, the accents now in
        folded in."""
        if beats:
            return self._with_bar_positions(beats)
        if self._meter.count.due(self._frames) or self._level.count.due(self._frames):
            self._with_bar_positions(beats)
        return beats

    def _banded(self, onsets: list[Onset]) -> list[BandedOnset]:
        """Take ``onsets`` (after their frames' sums are in); the waiting onsets whose band is now decided."""
        if onsets:
            hop_s, offset_s = self.hop_s, self.frame_time_offset_s
            self._pending += [(band_frame(o, hop_s, offset_s), o) for o in onsets]
        pending = self._pending
        if pending and pending[0][0] < self._frames - SPAN_FRAMES:
            return self._decide(final=False)
        return []

    def _trim_if_long(self) -> None:
        if len(self._sums) > 6 * KEEP_FRAMES:
            self._trim()

    def _with_bar_positions(self, beats: list[Beat]) -> list[Beat]:
        """``beats`` (just committed by the tracker) at the music's metrical level
        (:mod:`server.rhythm.level`: all, or every second one at half the tempo) with their bar
        positions (:mod:`server.rhythm.meter`), each from the accents of the beats before it; then the
        accents whose frames are in are folded in."""
        level, meter, hop_s, offset_s = self._level, self._meter, self.hop_s, self.frame_time_offset_s
        out = []
        for beat in beats:
            level.fold(self._sums, self._sums_first)
            meter.fold(self._sums, self._sums_first)
            frame = round((beat.time - offset_s) / hop_s)
            if not level.beat(beat.time, beat.bpm, frame):
                continue
            bpm = beat.bpm / level.factor
            out.append(Beat(beat.time, bpm, beat.confidence, meter.beat(beat.time, bpm, frame)))
        level.fold(self._sums, self._sums_first)  # before the sums are trimmed
        meter.fold(self._sums, self._sums_first)
        return out

    def _trim(self) -> None:
        """Forget group sums older than the last ``KEEP_FRAMES`` frames and than every pending onset's (after
        deciding: a long block's early onsets need the sums from before its last 64 frames)."""
        keep_from = self._frames - KEEP_FRAMES
        if self._pending:
            keep_from = min(keep_from, self._pending[0][0] - 1)
        drop = keep_from - self._sums_first
        if drop > 0:
            del self._sums[: 3 * drop]
            self._sums_first += drop

    def _decide(self, *, final: bool) -> list[BandedOnset]:
        """The bands of the pending onsets whose frames are in (all of them when ``final``), in plain
        Python: a handful of values per onset (:func:`~server.rhythm.bands.peak_scores`)."""
        pending = self._pending
        ready = len(pending)
        if not final:
            limit = self._frames - SPAN_FRAMES  # an onset is ready once SPAN_FRAMES frames follow its own
            ready = 0
            while ready < len(pending) and pending[ready][0] < limit:
                ready += 1
        if not ready:
            return []
        sums, first = self._sums, self._sums_first
        done = []
        for frame, onset in pending[:ready]:
            attack = onset.attack
            if attack is None:
                name = self._bands.classify_rows([peak_scores(sums, frame - first, WEIGHTS)])[0]
            else:
                scores = attack_scores(sums, frame - first, attack.energies)
                name = self._attack_bands.classify_rows([scores])[0]
            done.append(BandedOnset(onset, name))
        del pending[:ready]
        return done


def band_frame(onset: Onset, hop_s: float, offset_s: float) -> int:
    """The frame whose rise names ``onset``'s band: the one centred on its attack (``offset_s``: where a
    frame's attack lies from its end, :attr:`RhythmSession.frame_time_offset_s`), or with attack evidence
    the frame it was decided at (in by then, so the onset does not wait)."""
    if onset.attack is None:
        return round((onset.time - offset_s) / hop_s)
    return round(onset.attack.decided_s / hop_s) - 1


SessionInput = tuple[RhythmSession, npt.ArrayLike, Sequence[F32] | F32, list[Onset]]


def latest_rows(rows: Sequence[F32] | F32, n: int) -> F32:
    """The last ``n`` of the detector's ``take_rows()`` (one array, or a list of them in frame order): the
    rows of its ``n`` new onset-strength values, shape ``(n, n_bands)``.

    Raises
    ------
    ValueError
        With fewer than ``n`` rows (the row tap was off, or rows were taken without their values).
    """
    if isinstance(rows, np.ndarray):
        part, have = rows, len(rows)
    elif len(rows) == 1:
        part = rows[0]
        have = len(part)
    else:
        have = sum(len(part) for part in rows)
        part = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    if have < n:
        raise ValueError(
            f"{n} onset-strength values for {have} filterbank rows: feed the detector's take_odf() and "
            "take_rows() after each block (RhythmSession.beside turns its row tap on)"
        )
    return part[have - n :] if have > n else part


def _front(items: Sequence[SessionInput]) -> list[list[float]]:
    """:func:`process_sessions`' front end: each session's beat strength for its new frames (their group
    sums appended to its own, its frame count and last row moved on). Raises as it does, before any
    session has changed."""
    if len(items) > 1 and len({id(item[0]) for item in items}) != len(items):
        raise ValueError("a session is listed twice")
    # Per kind of front end (band groups, number of bands: streams at different rates differ), the
    # sessions with new frames: their indices, their previous rows then new rows, their onset strengths
    # each followed by a 0 (beside the next one's previous row).
    kinds: dict[tuple[int, int], tuple[BandGroups, list[int], list[F32], list[float]]] = {}
    counts: list[int] = []
    last_groups, last_bands = None, -1  # the kind of the last session (a batch is mostly of one kind)
    for index, (session, odf, rows, _) in enumerate(items):
        values = odf if isinstance(odf, np.ndarray) and odf.ndim == 1 else np.ravel(odf)
        n = len(values)
        counts.append(n)
        if type(rows) is list and len(rows) == 1 and len(rows[0]) == n:  # latest_rows' usual case
            part = rows[0]
        else:
            part = latest_rows(rows, n)
        if not n:
            continue
        groups = session._groups
        if groups is not last_groups or part.shape[1] != last_bands:
            last_groups, last_bands = groups, part.shape[1]
            key = (id(groups), last_bands)  # (grid_for shares one BandGroups per rate)
            kind = kinds.get(key)
            if kind is None:
                kind = kinds[key] = (groups, [], [], [])
            _, members, stacked, odfs = kind
        members.append(index)
        previous = session._previous
        stacked.append(part[:1] if previous is None else previous)
        stacked.append(part)
        odfs += values.tolist()
        odfs.append(0.0)
    strengths: list[list[float]] = [[] for _ in items]
    for groups, members, stacked, odfs in kinds.values():
        joined = np.concatenate(stacked)
        totals, sums = rise_totals(joined, groups)
        # o + RISE_WEIGHT * t per value (float64): in numpy for many values, in Python for a few (the same
        # operations, so the same values)
        if len(odfs) > SMALL_BATCH:
            strength = np.array(odfs[:-1], dtype=np.float64)
            strength += RISE_WEIGHT * totals.astype(np.float64)
            strength_list = strength.tolist()
        else:
            strength_list = [o + RISE_WEIGHT * t for o, t in zip(odfs, totals.tolist(), strict=False)]
        sums_list = sums.reshape(-1).tolist()
        at = 0  # row of joined before the session's first new row
        for index in members:
            session, n = items[index][0], counts[index]
            strengths[index] = strength_list[at : at + n]
            at += n
            session._previous = joined[at : at + 1]
            session._sums.extend(sums_list[3 * (at - n) : 3 * at])
            session._frames += n
            at += 1
    return strengths


def process_sessions(items: Sequence[SessionInput]) -> list[tuple[list[Beat], list[BandedOnset]]]:
    """Feed many sessions at once: ``(session, odf, rows, onsets)`` each, as :meth:`RhythmSession.process`.

    One front end (:func:`~server.rhythm.features.rise_totals`: the band rise of the beat strength and
    each group's summed rise, kept ``KEEP_FRAMES`` for the bands) for every new frame of every session
    with the same filterbank (one per sample rate's bands),
    and one forward-filter step per frame for all their trackers
    (:func:`~server.rhythm.tracker.advance_trackers`); each session's results are bitwise those it would
    get alone.

    Raises
    ------
    ValueError
        When a session has fewer rows than ``odf`` values, or is listed twice; no session has changed.
    """
    strengths = _front(items)
    beats = advance_trackers([item[0]._tracker for item in items], strengths)
    out: list[tuple[list[Beat], list[BandedOnset]]] = []
    limit = 6 * KEEP_FRAMES
    for (session, _, _, onsets), found in zip(items, beats, strict=True):
        # _placed, _banded and _trim_if_long, their tests inline (most frames have nothing to do)
        frames = session._frames
        if found:
            placed = session._with_bar_positions(found)
        else:
            placed = found
            waiting, also = session._meter.count.pending, session._level.count.pending
            if (waiting and waiting[0][1] + AFTER_FRAMES < frames) or (
                    also and also[0][1] + AFTER_FRAMES < frames):  # BeatCount.due
                session._with_bar_positions(found)
        pending = session._pending
        if onsets or (pending and pending[0][0] < frames - SPAN_FRAMES):
            out.append((placed, session._banded(onsets)))
        else:
            out.append((placed, []))
        if len(session._sums) > limit:
            session._trim()
    return out


@dataclasses.dataclass(frozen=True)
class RhythmResult:
    """Rhythm of a whole file.

    Attributes
    ----------
    beats : list of Beat
    tempo_bpm : float or None
        60 over the median interval between consecutive beats, beats per minute; None with < 2 beats.
    onsets : list of BandedOnset
    """

    beats: list[Beat]
    tempo_bpm: float | None
    onsets: list[BandedOnset]


def analyze_rhythm(samples: npt.ArrayLike, sample_rate: int, *, block_s: float = 0.02,
                   settings: DetectorSettings | None = None) -> RhythmResult:
    """Beats, tempo and banded onsets of a whole mono signal, streamed as a live stream would be.

    Parameters
    ----------
    samples : array_like, shape (n,)
        Mono float32 in [-1, 1].
    sample_rate : int
    block_s : float
        Block length fed at a time, seconds (the result does not depend on it).
    settings : DetectorSettings, optional
        The detector's (the defaults when omitted); on the default grid.
    """
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    detector = OnsetDetector(sample_rate, 1, settings)
    session = RhythmSession.beside(detector)
    block = max(1, round(block_s * sample_rate))
    beats: list[Beat] = []
    banded: list[BandedOnset] = []
    for start in range(0, len(audio), block):
        found = detector.process(audio[start : start + block])
        new_beats, new_banded = session.process(detector.take_odf(), detector.take_rows(), found)
        beats += new_beats
        banded += new_banded
    session.process(np.zeros(0, dtype=np.float32), [], detector.flush())
    banded += session.flush()
    times = np.array([b.time for b in beats])
    tempo = float(60.0 / np.median(np.diff(times))) if len(times) >= 2 else None
    return RhythmResult(beats=beats, tempo_bpm=tempo, onsets=banded)
