"""A live stream's rhythm in its pool worker, beside its detector: beats, tempo and each onset's band.

:class:`RhythmBeside` wraps a :class:`~server.rhythm.RhythmSession` that may start after its detector
(the setting ``beats`` turned on mid-stream): the session reads the filterbank rows the detector computes
anyway (its row tap) from the detector's next frame on, and times go back and forth by the detector time
of that frame. :func:`advance_many` feeds every rhythm of a batch at once, after the batch's detectors
(:func:`~server.rhythm.process_sessions`). With a rhythm, a detector's onsets come out only once their
band is decided (about 30 ms after the detector reports them). Everything here runs in the worker process
and must pickle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from server.dsp import DetectorSettings, Onset, OnsetDetector
from server.rhythm import BandedOnset, Beat, RhythmSession, process_sessions
from server.rhythm.features import FRAME_S, HOP_S
from server.rhythm.session import SessionInput

F32 = npt.NDArray[np.float32]

# (time s on the detector's timeline, bpm, confidence, bar position: 1 = downbeat, None while unknown)
BeatTuple = tuple[float, float, float, int | None]
TempoTuple = tuple[float, float, float]  # (bpm, confidence, next beat time s on the detector's timeline)
BandedTuple = tuple[float, float, str | None]  # (time s on the detector's timeline, strength, band)
# One stream's part of a batch: the detector's take_odf(), its beats and its onsets now banded.
Advanced = tuple[F32, list[BeatTuple], list[BandedTuple]]


def follows_grid(settings: DetectorSettings) -> bool:
    """Whether ``settings`` ask for rhythm and use the one grid :mod:`server.rhythm` follows."""
    return settings.beats and (settings.frame_ms, settings.hop_ms) == (1000 * FRAME_S, 1000 * HOP_S)


class RhythmBeside:
    """Rhythm of ``detector``'s stream from its next frame on (from its start when nothing came yet).

    Raises
    ------
    ValueError
        For a detector on another grid.
    """

    def __init__(self, detector: OnsetDetector) -> None:
        self._session = RhythmSession.beside(detector)
        hop = round(HOP_S * detector.sample_rate)
        # detector time of the session's time 0: the start of its first frame's last hop
        self._offset_s = detector.samples_in // hop * hop / detector.sample_rate

    @classmethod
    def beside(cls, detector: OnsetDetector) -> RhythmBeside | None:
        """A rhythm for ``detector`` from now on when its settings ask for one, else None."""
        if not follows_grid(detector.settings):
            return None
        try:
            return cls(detector)
        except ValueError:
            return None

    def process(self, detector: OnsetDetector, onsets: list[Onset]) -> Advanced:
        """:func:`advance_many` of this one stream; raises what stopped it."""
        outcome = advance_many([(self, detector, onsets)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def finish(self, onsets: list[Onset]) -> list[BandedTuple]:
        """The detector's flushed onsets: every onset still waiting, with its band."""
        shift = self._offset_s
        empty = np.zeros(0, dtype=np.float32)
        _, banded = self._session.process(empty, [], [o.shifted(shift) for o in onsets])
        return [(b.onset.time + shift, b.onset.strength, b.band) for b in banded + self._session.flush()]

    def tempo(self) -> TempoTuple | None:
        tempo = self._session.tempo()
        if tempo is None:
            return None
        return (tempo.bpm, tempo.confidence, tempo.next_beat_time + self._offset_s)


def advance_many(
    items: Sequence[tuple[RhythmBeside, OnsetDetector, list[Onset]]],
) -> list[Advanced | Exception]:
    """After the batch's detectors: each rhythm's detector's ``take_odf()`` and rows, and its onsets (in
    time order); per item, the detection function taken, the beats committed to and the onsets whose band
    is now decided, on the detector's timeline, or the exception that stopped its rhythm.

    One item's fault does not cost the others their frames: when the shared pass turns its inputs down
    before changing anything (a ``ValueError`` of :func:`~server.rhythm.process_sessions`), each item runs
    alone on the frames already taken, so only a faulty one fails. Any other error may have left some
    sessions part-way, so every item gets it (their streams start afresh: :mod:`server.stream.in_worker`).
    """
    odfs = []
    inputs = []
    for rhythm, detector, onsets in items:
        odf = detector.take_odf()
        odfs.append(odf)
        shift = rhythm._offset_s
        moved = [o.shifted(shift) for o in onsets] if shift and onsets else onsets
        inputs.append((rhythm._session, odf, detector.take_rows(), moved))
    processed: list[tuple[list[Beat], list[BandedOnset]] | Exception]
    try:
        processed = list(process_sessions(inputs))
    except ValueError:  # turned down before any session changed: each alone, on the frames taken
        processed = [_alone(one) for one in inputs]
    except Exception as exc:
        processed = [exc] * len(inputs)
    out: list[Advanced | Exception] = []
    for (rhythm, _, _), odf, outcome in zip(items, odfs, processed, strict=True):
        if isinstance(outcome, Exception):
            out.append(outcome)
            continue
        beats, banded = outcome
        shift = rhythm._offset_s
        moved_beats = [(b.time + shift, b.bpm, b.confidence, b.bar_position) for b in beats] if beats else []
        out.append((odf, moved_beats,
                    [(b.onset.time + shift, b.onset.strength, b.band) for b in banded] if banded else []))
    return out


def _alone(item: SessionInput) -> tuple[list[Beat], list[BandedOnset]] | Exception:
    try:
        return process_sessions([item])[0]
    except Exception as exc:
        return exc
