"""Rhythm for one stream beside its onset detector: beats, tempo, and the band of each onset.

:class:`RhythmSession` is the per-stream state a pool worker keeps next to an
:class:`~server.dsp.OnsetDetector` (default grid: 40 ms frames, 10 ms hop). Each block it takes the same
audio, the detector's ``take_odf()`` and its onsets, and returns the beats committed to and each onset's
band once the frames after it are in. :func:`analyze_rhythm` does a whole file.

The band front end here computes the detector's filterbank rows again (:class:`BandFlux`); a detector that
handed over its own rows would save that (see :func:`server.rhythm.features.strength_from_rows`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from server.dsp import OnsetDetector
from server.dsp.onset import Onset
from server.rhythm.bands import SPAN_FRAMES, WEIGHTS, OnsetBands, band_scores, onset_frames
from server.rhythm.beat import Beat, Tempo
from server.rhythm.features import FRAME_S, HOP_S, BandFlux, beat_strength
from server.rhythm.meter import MeterTracker
from server.rhythm.settings import TrackerSettings
from server.rhythm.tracker import BeatTracker

F32 = npt.NDArray[np.float32]

KEEP_FRAMES = 64  # group rises kept for onsets still waiting for their band (0.64 s at 10 ms)
BEAT_OFFSET_HOPS = (
    -1
)  # a beat's time is its frame's strongest value one hop earlier (calibrated on rhythm-dev)


@dataclasses.dataclass(frozen=True)
class BandedOnset:
    """An onset and where its attack is strongest: ``"low"``, ``"mid"`` or ``"high"``."""

    onset: Onset
    band: str


class RhythmSession:
    """Beats and onset bands of one stream, fed beside its detector.

    Parameters
    ----------
    sample_rate : int
    settings : TrackerSettings, optional

    Raises
    ------
    ValueError
        For a rate the detector would refuse (via the band front end's grid).
    """

    def __init__(self, sample_rate: int, settings: TrackerSettings | None = None) -> None:
        self._flux = BandFlux(sample_rate)
        self._tracker = BeatTracker(
            self._flux.hop_s, settings, time_offset_s=BEAT_OFFSET_HOPS * self._flux.hop_s
        )
        self._bands = OnsetBands()
        self._meter = MeterTracker()
        self._rises = np.zeros((0, 3), dtype=np.float32)
        self._rises_base = 0  # frame index of self._rises[0]
        self._frames = 0
        self._pending: list[Onset] = []

    @property
    def tracker(self) -> BeatTracker:
        return self._tracker

    def tempo(self) -> Tempo | None:
        """The tracker's current tempo (see :meth:`BeatTracker.tempo`)."""
        return self._tracker.tempo()

    def process(
        self, samples: npt.ArrayLike, odf: npt.ArrayLike, onsets: list[Onset]
    ) -> tuple[list[Beat], list[BandedOnset]]:
        """Feed the block the detector just took, its ``take_odf()`` and its onsets.

        Parameters
        ----------
        samples : array_like, shape (n,)
            Mono float32 samples, the same the detector got (downmixed).
        odf : array_like, shape (n_frames,)
            The detector's ``take_odf()`` after this block.
        onsets : list of Onset
            The detector's onsets from this block, in time order.

        Returns
        -------
        beats : list of Beat
            Beats committed to, in time order.
        banded : list of BandedOnset
            Onsets (of this or earlier blocks) whose band is now decided, in time order.

        Raises
        ------
        ValueError
            When ``odf`` does not have one value per frame of ``samples`` (the detector's grid is not the
            default 40 ms / 10 ms one, or blocks were skipped).
        """
        total, rises = self._flux.process(np.asarray(samples, dtype=np.float32).reshape(-1))
        strength = np.asarray(odf, dtype=np.float32).reshape(-1)
        if len(strength) != len(total):
            raise ValueError(
                f"{len(strength)} onset-strength values for {len(total)} frames: the detector must use "
                f"{1000 * FRAME_S:g} ms frames and a {1000 * HOP_S:g} ms hop and see the same blocks"
            )
        beats = self._tracker.process(beat_strength(strength, total))
        self._rises = np.concatenate((self._rises, rises))
        self._frames += len(rises)
        beats = [self._with_bar_position(beat) for beat in beats]
        self._meter.fold(self._rises, self._rises_base)  # before the rises are trimmed
        self._pending += onsets
        banded = self._decide(final=False)
        self._trim()  # after deciding: a long block's early onsets need rises from before the last 64
        return beats, banded

    def flush(self) -> list[BandedOnset]:
        """End of stream: the bands of the onsets still waiting (frames after the end count as no rise)."""
        return self._decide(final=True)

    def _with_bar_position(self, beat: Beat) -> Beat:
        """``beat`` with its bar position (:mod:`server.rhythm.meter`), from the accents of earlier beats."""
        self._meter.fold(self._rises, self._rises_base)
        frame = int(onset_frames([beat.time], self._flux.hop_s, self._flux.frame_time_offset_s)[0])
        return dataclasses.replace(beat, bar_position=self._meter.beat(beat.time, beat.bpm, frame))

    def _trim(self) -> None:
        drop = len(self._rises) - KEEP_FRAMES
        if drop > 0:
            self._rises = self._rises[drop:]
            self._rises_base += drop

    def _decide(self, *, final: bool) -> list[BandedOnset]:
        if not self._pending:
            return []
        times = np.array([o.time for o in self._pending])
        frames = onset_frames(times, self._flux.hop_s, self._flux.frame_time_offset_s)
        ready = (
            len(frames) if final else int(np.searchsorted(frames + SPAN_FRAMES, self._frames, side="left"))
        )
        if ready == 0:
            return []
        scores = band_scores(self._rises, frames[:ready] - self._rises_base, WEIGHTS)
        names = self._bands.classify(scores)
        done = [BandedOnset(onset, name) for onset, name in zip(self._pending[:ready], names, strict=True)]
        del self._pending[:ready]
        return done


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
    session = RhythmSession(sample_rate)
    block = max(1, round(block_s * sample_rate))
    beats: list[Beat] = []
    banded: list[BandedOnset] = []
    for start in range(0, len(audio), block):
        chunk = audio[start : start + block]
        found = detector.process(chunk)
        new_beats, new_banded = session.process(chunk, detector.take_odf(), found)
        beats += new_beats
        banded += new_banded
    session.process(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), detector.flush())
    banded += session.flush()
    times = np.array([b.time for b in beats])
    tempo = float(60.0 / np.median(np.diff(times))) if len(times) >= 2 else None
    return RhythmResult(beats=beats, tempo_bpm=tempo, onsets=banded)
