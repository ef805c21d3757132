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
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from server.dsp import OnsetDetector
from server.dsp.onset import Onset
from server.rhythm.bands import SPAN_FRAMES, WEIGHTS, OnsetBands, window_scores
from server.rhythm.beat import Beat, Tempo
from server.rhythm.features import FRAME_S, HOP_S, RISE_WEIGHT, grid_for, rise_totals
from server.rhythm.settings import TrackerSettings
from server.rhythm.tracker import BeatTracker, advance_trackers

F32 = npt.NDArray[np.float32]

KEEP_FRAMES = 64  # filterbank rows kept for onsets still waiting for their band (0.64 s at 10 ms)
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
        self._bands = OnsetBands()
        self._silence = np.zeros((1, bank.n_bands), dtype=np.float32)
        silence = self._silence if after_silence else None
        self._previous: F32 | None = silence  # the last row fed (None: none yet, mid-stream)
        self._kept: list[F32] = []  # the rows of the last KEEP_FRAMES frames or more, in pieces, oldest first
        self._kept_first = 0  # frame index of self._kept[0][0]
        self._before_kept: F32 | None = silence  # the row before it (None: unknown, no rise)
        self._frames = 0
        self._pending: list[tuple[int, Onset]] = []  # onsets waiting for their band, with their frame

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
        """The tracker's current tempo (see :meth:`BeatTracker.tempo`)."""
        return self._tracker.tempo()

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
        return _decide_bands([self], final=True)[0]

    def _take(self, rows: F32) -> None:
        """The rows of the new frames (a view: they are not changed later)."""
        self._previous = rows[-1:]
        self._kept.append(rows)
        self._frames += len(rows)

    def _trim(self) -> None:
        """Forget rows older than the last ``KEEP_FRAMES`` frames (after deciding: a long block's early
        onsets need rows from before its last 64 frames)."""
        kept = self._kept
        while len(kept) > 1 and self._frames - self._kept_first - len(kept[0]) >= KEEP_FRAMES:
            dropped = kept.pop(0)
            self._kept_first += len(dropped)
            self._before_kept = dropped[-1:]

    def _ready(self, final: bool) -> int:
        """How many of the pending onsets have their frames in (all of them when ``final``)."""
        pending = self._pending
        if final:
            return len(pending)
        limit = self._frames - SPAN_FRAMES  # an onset is ready once SPAN_FRAMES frames follow its own
        ready = 0
        while ready < len(pending) and pending[ready][0] < limit:
            ready += 1
        return ready

    def _window(self, frame: int) -> F32:
        """The rows of frames ``frame - 2`` to ``frame + SPAN_FRAMES``, shape (SPAN_FRAMES + 3, n_bands):
        frames past the last kept repeat it, frames before the first repeat the row before it (the silence
        before a stream, or the first row), so that their rise is 0."""
        low, high = frame - 2, frame + SPAN_FRAMES + 1
        kept = self._kept
        parts: list[F32] = []
        end = self._frames
        index = len(kept)
        while index > 0 and end > low:
            index -= 1
            piece = kept[index]
            start = end - len(piece)
            if start < high:
                parts.append(piece[max(low - start, 0) : high - start])
            end = start
        parts.reverse()
        got = sum(len(part) for part in parts)
        if not got:  # every wanted frame is past the kept ones (or none kept): no rise
            return np.repeat(kept[-1][-1:] if kept else self._silence, high - low, axis=0)
        first = max(low, end)  # frame of parts' first row
        if first > low:  # before the first kept frame
            before = self._before_kept if self._before_kept is not None else parts[0][:1]
            parts.insert(0, np.repeat(before, first - low, axis=0))
        missing = (high - low) - (first - low) - got
        if missing > 0:
            parts.append(np.repeat(parts[-1][-1:], missing, axis=0))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _decide_bands(sessions: Sequence[RhythmSession], *, final: bool) -> list[list[BandedOnset]]:
    """The bands of each session's onsets whose frames are in (all when ``final``): one pass for all."""
    ready = [session._ready(final) for session in sessions]
    out: list[list[BandedOnset]] = [[] for _ in sessions]
    if not any(ready):
        return out
    windows = [
        session._window(frame)
        for session, count in zip(sessions, ready, strict=True)
        for frame, _ in session._pending[:count]
    ]
    scores = window_scores(np.stack(windows), sessions[0]._groups, WEIGHTS)
    at = 0
    for session, count, done in zip(sessions, ready, out, strict=True):
        if count:
            names = session._bands.classify(scores[at : at + count])
            pending = session._pending[:count]
            done += [BandedOnset(onset, name) for (_, onset), name in zip(pending, names, strict=True)]
            del session._pending[:count]
            at += count
    return out


SessionInput = tuple[RhythmSession, npt.ArrayLike, Sequence[F32] | F32, list[Onset]]


def process_sessions(items: Sequence[SessionInput]) -> list[tuple[list[Beat], list[BandedOnset]]]:
    """Feed many sessions at once: ``(session, odf, rows, onsets)`` each, as :meth:`RhythmSession.process`.

    One front end (:func:`~server.rhythm.features.rise_totals`) for every new frame of every session,
    one forward-filter step per frame for all their trackers
    (:func:`~server.rhythm.tracker.advance_trackers`), and one pass for the bands of every onset now
    decided (from the rows kept, ``KEEP_FRAMES``); each session's results are bitwise those it would get
    alone.

    Raises
    ------
    ValueError
        When a session has fewer rows than ``odf`` values, or is listed twice; no session has changed.
    """
    if len({id(item[0]) for item in items}) != len(items):
        raise ValueError("a session is listed twice")
    stacked: list[F32] = []  # per session with new frames: its previous row, then its new rows
    odfs: list[list[float]] = []
    for session, odf, rows, _ in items:
        values: list[float] = odf.tolist() if isinstance(odf, np.ndarray) else np.ravel(odf).tolist()
        odfs.append(values)
        n = len(values)
        parts = [rows] if isinstance(rows, np.ndarray) else rows
        have = len(parts[0]) if len(parts) == 1 else sum(len(part) for part in parts)
        if have < n:
            raise ValueError(
                f"{n} onset-strength values for {have} filterbank rows: feed the detector's take_odf() and "
                "take_rows() after each block (RhythmSession.beside turns its row tap on)"
            )
        if not n:
            continue
        if have > n or len(parts) > 1:
            parts = [np.concatenate(parts)[have - n :]]
        previous = session._previous
        stacked.append(parts[0][:1] if previous is None else previous)
        stacked.append(parts[0])
    strengths: list[list[float]] = []
    if stacked:
        joined = np.concatenate(stacked)
        totals = rise_totals(joined).tolist()
        at = 0  # row of joined before the session's first new row
        for (session, _, _, _), values in zip(items, odfs, strict=True):
            n = len(values)
            if n:
                rises = totals[at : at + n]
                strengths.append([o + RISE_WEIGHT * t for o, t in zip(values, rises, strict=True)])
                session._take(joined[at + 1 : at + 1 + n])
                at += n + 1
            else:
                strengths.append(values)
    else:
        strengths = odfs
    beats = advance_trackers([item[0]._tracker for item in items], strengths)
    deciding: list[int] = []  # sessions with an onset whose frames are in
    for index, (session, _, _, onsets) in enumerate(items):
        if onsets:
            hop_s, offset_s = session.hop_s, session.frame_time_offset_s
            session._pending += [(round((o.time - offset_s) / hop_s), o) for o in onsets]
        if session._pending and session._pending[0][0] < session._frames - SPAN_FRAMES:
            deciding.append(index)
    banded: list[list[BandedOnset]] = [[] for _ in items]
    if deciding:
        decided = _decide_bands([items[index][0] for index in deciding], final=False)
        for index, done in zip(deciding, decided, strict=True):
            banded[index] = done
    for session, _, _, _ in items:
        if len(session._kept) > 2:
            session._trim()
    return list(zip(beats, banded, strict=True))


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


def analyze_rhythm(samples: npt.ArrayLike, sample_rate: int, *, block_s: float = 0.02) -> RhythmResult:
    """Beats, tempo and banded onsets of a whole mono signal, streamed as a live stream would be.

    Parameters
    ----------
    samples : array_like, shape (n,)
        Mono float32 in [-1, 1].
    sample_rate : int
    block_s : float
        Block length fed at a time, seconds (the result does not depend on it).
    """
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    detector = OnsetDetector(sample_rate, 1)
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
