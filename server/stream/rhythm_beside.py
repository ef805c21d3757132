"""A live stream's rhythm in its pool worker, beside its detector: beats, tempo and each onset's band.

:class:`RhythmBeside` wraps a :class:`~server.rhythm.RhythmSession` that may start after its detector
(the setting ``beats`` turned on mid-stream): its front end is first fed the zeros that put its frames on
the detector's grid, and times go back and forth by the detector time at which it started. With it, a
detector's onsets come out only once their band is decided (about 30 ms after the detector reports them).
Everything here runs in the worker process and must pickle.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from server.dsp import DetectorSettings, Onset, OnsetDetector
from server.rhythm import RhythmSession
from server.rhythm.features import FRAME_S, HOP_S

F32 = npt.NDArray[np.float32]

# (time s on the detector's timeline, bpm, confidence, bar position: 1 = downbeat, None while unknown)
BeatTuple = tuple[float, float, float, int | None]
TempoTuple = tuple[float, float, float]  # (bpm, confidence, next beat time s on the detector's timeline)
BandedTuple = tuple[float, float, str | None]  # (time s on the detector's timeline, strength, band)


def follows_grid(settings: DetectorSettings) -> bool:
    """Whether ``settings`` ask for rhythm and use the one grid :mod:`server.rhythm` follows."""
    return settings.beats and (settings.frame_ms, settings.hop_ms) == (1000 * FRAME_S, 1000 * HOP_S)


class RhythmBeside:
    """Rhythm of one stream from the detector's sample ``samples_in`` on (0: from its start).

    Raises
    ------
    ValueError
        For a sample rate the band front end refuses.
    """

    def __init__(self, sample_rate: int, samples_in: int = 0) -> None:
        self._session = RhythmSession(sample_rate)
        hop = round(HOP_S * sample_rate)
        lead = samples_in % hop  # zeros that put the front end's frame ends on the detector's
        self._offset_s = (samples_in - lead) / sample_rate  # detector time of the front end's sample 0
        if lead:
            beats, banded = self._session.process(np.zeros(lead, dtype=np.float32),
                                                  np.zeros(0, dtype=np.float32), [])
            assert not beats and not banded

    @classmethod
    def beside(cls, detector: OnsetDetector) -> RhythmBeside | None:
        """A rhythm for ``detector`` from now on when its settings ask for one, else None."""
        if not follows_grid(detector.settings):
            return None
        try:
            return cls(detector.sample_rate, detector.samples_in)
        except ValueError:
            return None

    def process(self, mono: F32, odf: F32, onsets: list[Onset]) -> tuple[list[BeatTuple], list[BandedTuple]]:
        """The detector's block (mono), its ``take_odf()`` and onsets: the beats committed to and the onsets
        whose band is now decided, both on the detector's timeline."""
        shift = self._offset_s
        moved = [Onset(time=o.time - shift, strength=o.strength) for o in onsets]
        beats, banded = self._session.process(mono, odf, moved)
        return ([(b.time + shift, b.bpm, b.confidence, b.bar_position) for b in beats],
                [(b.onset.time + shift, b.onset.strength, b.band) for b in banded])

    def finish(self, onsets: list[Onset]) -> list[BandedTuple]:
        """The detector's flushed onsets: every onset still waiting, with its band."""
        shift = self._offset_s
        empty = np.zeros(0, dtype=np.float32)
        _, banded = self._session.process(empty, empty, [Onset(o.time - shift, o.strength) for o in onsets])
        return [(b.onset.time + shift, b.onset.strength, b.band) for b in banded + self._session.flush()]

    def tempo(self) -> TempoTuple | None:
        tempo = self._session.tempo()
        if tempo is None:
            return None
        return (tempo.bpm, tempo.confidence, tempo.next_beat_time + self._offset_s)
