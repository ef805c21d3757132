"""A file job's rhythm in pool calls of its own, beside the turns that run its detector.

With a worker to spare, a job with ``beats`` runs its detector in turns of
:func:`server.jobs.work.analyse_turn` with ``split_beats``: each turn hands over, block by block, the
detector's onset strength (``take_odf()``), its filterbank rows (``take_rows()``) and the onsets it found, and
:func:`rhythm_turn` feeds them to the job's :class:`~server.rhythm.RhythmSession` in another worker, while the
next detector turn runs: the band features, the sequential beat tracker, the beats' level and bar positions,
and the onsets' bands. These are the calls one worker makes doing both, in the same order, so the result is
the same bitwise; the onsets are encoded here, with their bands.

A turn here obeys the same rule as the detector's: it feeds blocks (one detector block each, up to 6 s of
audio, a few milliseconds) for up to ``turn_s``, and ends after the current block as soon as another call
waits for its worker (:func:`~server.pool.worker.calls_waiting`), so a live stream's block waits for at most
one.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from server.dsp.onset import Onset
from server.jobs.model import ErrorCode, JobError
from server.jobs.result import encode_beats, encode_onsets
from server.pool.worker import calls_waiting
from server.rhythm import BandedOnset, RhythmSession

TURN_S = 0.2  # longest run of blocks in one pool call while no other call waits for the worker, s

Block = tuple[int, list[Onset]]  # a detector block: its frames, and the onsets found after it


@dataclass(slots=True)
class RhythmTurnOutcome:
    """The session after a turn, how many of the blocks (and frames) given it were fed (the rest are for
    the next turn), and what they gave, encoded as JSON array items: the onsets whose band is decided, the
    beats committed to, and the beat times."""

    session: RhythmSession
    blocks_used: int = 0
    frames_used: int = 0
    onsets_json: str = ""
    beats_json: str = ""
    beat_times_s: list[float] = field(default_factory=list)
    error: JobError | None = None
    trace: str | None = None


def rhythm_turn(session: RhythmSession, odf: np.ndarray, rows: np.ndarray | None, blocks: list[Block],
                final: bool, turn_s: float = TURN_S) -> RhythmTurnOutcome:
    """Feed ``blocks`` in order (``blocks[i][0]`` frames of ``odf`` and ``rows`` each, and its onsets) for up
    to ``turn_s`` or until another call waits; with ``final`` (the file is done), once all are in, the
    session is flushed. Failures come back in ``error``."""
    deadline_s = time.monotonic() + turn_s
    at = used = 0
    banded: list[BandedOnset] = []
    beats: list[tuple[float, int | None]] = []
    try:
        for frames, onsets in blocks:
            part = rows[at : at + frames] if rows is not None else np.zeros((0, 0), dtype=np.float32)
            found, decided = session.process(odf[at : at + frames], part, onsets)
            beats += [(beat.time, beat.bar_position) for beat in found]
            banded += decided
            at += frames
            used += 1
            if used < len(blocks) and (time.monotonic() >= deadline_s or calls_waiting()):
                break
        if final and used == len(blocks):
            banded += session.flush()
        return RhythmTurnOutcome(session, used, at,
                                 encode_onsets([(b.onset.time, b.onset.strength) for b in banded],
                                               [b.band for b in banded]),
                                 encode_beats(beats), [time_s for time_s, _ in beats])
    except Exception as exc:
        return RhythmTurnOutcome(session, used, at, error=JobError(ErrorCode.INTERNAL.value,
                                                                   f"rhythm analysis failed: {exc!r}"),
                                 trace=traceback.format_exc())
