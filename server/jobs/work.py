"""One bounded step of a file's analysis, run in a pool worker: the state crosses there and back.

A job is a sequence of :func:`analyse_step` calls. The first probes the file (and, for PyAV formats,
demuxes it into a packet spool, see :mod:`server.jobs.spool`); each later call decodes at most
:data:`STEP_SAMPLES` samples from where the previous one stopped and feeds them to the job's
:class:`~server.dsp.OnsetDetector`, which travels in the state. The last call flushes the detector. So no
step holds a worker for long whatever the file's length, and memory stays flat.

The server runs them in turns (:func:`analyse_turn`): one pool call runs steps in a row for up to
:data:`TURN_S`, and ends after the current step as soon as another call waits for its worker (a live
stream's audio, another job's turn). A file then crosses between the processes a few times a second, not
once per step (the detector's state, the rhythm's and the steps' findings each way), while a live stream
still waits for at most one step.

With the setting ``beats`` (on the default grid) a :class:`~server.rhythm.RhythmSession` travels beside the
detector: each step also returns the beats committed to and the bands decided for the onsets so far (in
onset order; a band may come a step after its onset). A job started with ``split_beats`` leaves its
rhythm session to another worker instead: each turn returns, block by block, the detector's onset strength,
filterbank rows and onsets, which :mod:`server.jobs.beat_work` feeds to the session there (the same calls,
so the same results, bitwise), while this worker goes on with the next blocks.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from server.dsp import DetectorSettings, OnsetDetector
from server.dsp.blocks import clip_full_scale
from server.dsp.onset import Onset
from server.exceptions import AudioFormatError
from server.jobs.model import ErrorCode, JobError
from server.jobs.probe import DecodeError, Decoder, Source, probe
from server.jobs.result import encode_beats, encode_onsets
from server.jobs.spool import SpanDecoder, SpoolCursor, demux_to_spool
from server.jobs.uploads import NO_ROOM_ERRNOS
from server.pool.worker import calls_waiting
from server.rhythm import RhythmSession
from server.rhythm.session import latest_rows

STEP_SAMPLES = 1 << 18  # samples (frames × channels) per step at most, in whole passes: 5.1 s at 44.1 kHz
TURN_S = 0.2  # longest run of steps in one pool call while no other call waits for the worker, s
# Each step's audio goes to the detector in blocks of whole passes (Plan.chunk_len frames each) lasting up
# to BLOCK_S: a 10-min 44.1 kHz WAV took 0.58 s of CPU so, against 0.65 s in 64 Ki-frame blocks (each ending
# in a short pass), and far less than in the decoder's own frames (~1000 per MP3 or Opus packet). Under the
# ODF_KEEP_S (10 s) of detection function a rhythm session may read at a time (take_odf).
BLOCK_S = 6.0
SEARCH_FRAMES = 1024  # frames per read when looking for where a failed block stopped decoding
# libsndfile subtypes read as int16 samples, which the detector scales by 1/32768 itself: the same float32
# values libsndfile would give (a scale by a power of two is exact), from a quarter of the decoding work.
INT16_SUBTYPES = frozenset({"PCM_16"})

OnsetTuple = tuple[float, float]  # (seconds since the file's first sample, strength)


def rhythm_for(detector: OnsetDetector) -> RhythmSession | None:
    """A rhythm session beside ``detector`` (its row tap on), or None (``beats`` off, or another grid)."""
    if not detector.settings.beats:
        return None
    try:
        return RhythmSession.beside(detector)
    except ValueError:
        return None


@dataclass(slots=True)
class FileAnalysis:
    """A job's analysis state between pool calls (small: paths, counters, the detector)."""

    upload: str
    spool: str
    settings: DetectorSettings
    source: Source | None = None
    detector: OnsetDetector | None = None
    frames_done: int = 0  # frames per channel analysed so far
    cursor: SpoolCursor | None = None  # PyAV formats: where the next span starts
    spool_bytes: int = 0
    clipped_samples: int = 0  # float samples beyond [-1, 1], clipped to it before analysis
    finished: bool = False
    step_samples: int = STEP_SAMPLES
    rhythm: RhythmSession | None = None
    unbanded: list[OnsetTuple] = field(default_factory=list)  # turns: onsets found, band not decided yet
    split_beats: bool = False  # leave the rhythm session to another worker (see the module's docstring)

    @property
    def progress(self) -> float:
        if self.finished:
            return 1.0
        source = self.source
        if source is None:
            return 0.0
        if source.decoder is Decoder.SOUNDFILE:
            return min(1.0, self.frames_done / source.frames) if source.frames else 0.0
        if self.cursor is None or not self.spool_bytes:
            return 0.0
        return min(1.0, self.cursor.offset / self.spool_bytes)


@dataclass(slots=True)
class StepOutcome:
    state: FileAnalysis
    onsets: list[OnsetTuple] = field(default_factory=list)
    # (beat time s, bar position or None while the meter is not known), committed in this step
    beats: list[tuple[float, int | None]] = field(default_factory=list)
    bands: list[str] = field(default_factory=list)  # bands of the next onsets (all steps'), in order
    # split_beats: per block, the detector's take_odf() and as many rows of take_rows(), and (frames, the
    # onsets found); after the first step, the rhythm session to feed them to
    odf: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    blocks: list[tuple[int, list[Onset]]] = field(default_factory=list)
    beat_side: RhythmSession | None = None
    error: JobError | None = None
    trace: str | None = None  # traceback of an unexpected failure, for the server's log


def analyse_step(state: FileAnalysis) -> StepOutcome:
    """Advance ``state`` by one bounded step. Failures come back in ``error``, never as exceptions."""
    try:
        if state.source is None:
            return StepOutcome(state, beat_side=_start(state))
        outcome = StepOutcome(state)
        _advance(state, outcome)
        return outcome
    except DecodeError as exc:
        return StepOutcome(state, error=JobError(exc.code.value, exc.message))
    except AudioFormatError as exc:
        return StepOutcome(state, error=JobError(ErrorCode.UNSUPPORTED_FORMAT.value, str(exc)))
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM_ERRNOS:
            return StepOutcome(state, error=JobError(
                ErrorCode.INSUFFICIENT_STORAGE.value, f"the server ran out of disk space for the file's "
                f"work files ({exc.strerror}); upload it again later"))
        return StepOutcome(state, error=JobError(ErrorCode.INTERNAL.value, f"analysis failed: {exc!r}"),
                           trace=traceback.format_exc())


@dataclass(slots=True)
class TurnOutcome:
    """What a turn found, encoded for the result (:mod:`server.jobs.result`): its onsets (with ``beats``,
    those whose band is decided; the others wait in ``state.unbanded``) and beats as JSON array items, and
    the beat times."""

    state: FileAnalysis
    onsets_json: str = ""
    beats_json: str = ""
    beat_times_s: list[float] = field(default_factory=list)
    # split_beats: the turn's blocks for the rhythm session (beat_side, after the first turn), found and
    # encoded there (server.jobs.beat_work): onset strength and filterbank rows of every frame, float32, and
    # per block (frames, onsets found); final once the file is done
    odf: np.ndarray | None = None
    rows: np.ndarray | None = None
    blocks: list[tuple[int, list[Onset]]] = field(default_factory=list)
    final: bool = False
    beat_side: RhythmSession | None = None
    error: JobError | None = None
    trace: str | None = None


def analyse_turn(state: FileAnalysis, turn_s: float = TURN_S) -> TurnOutcome:
    """Steps of :func:`analyse_step` in a row, in one pool call: what they found, in order, encoded.

    Ends after the step that finishes the file or fails (the failure is the outcome, and what earlier steps
    found goes with the job), after ``turn_s`` seconds, or as soon as another call waits for this worker
    (:func:`~server.pool.worker.calls_waiting`). Outside a pool worker only the time ends a turn.
    """
    deadline_s = time.monotonic() + turn_s
    outcome = analyse_step(state)
    while (outcome.error is None and not outcome.state.finished and time.monotonic() < deadline_s
           and not calls_waiting()):
        more = analyse_step(outcome.state)
        if more.error is not None:
            outcome = more
            break
        outcome.onsets += more.onsets
        outcome.beats += more.beats
        outcome.bands += more.bands
        outcome.odf += more.odf
        outcome.rows += more.rows
        outcome.blocks += more.blocks
    if outcome.error is not None:
        return TurnOutcome(outcome.state, error=outcome.error, trace=outcome.trace)
    try:
        return _encoded(outcome)
    except Exception as exc:  # an onset or beat that JSON cannot carry (NaN): a fault, not the file's
        return TurnOutcome(state, error=JobError(ErrorCode.INTERNAL.value, f"analysis failed: {exc!r}"),
                           trace=traceback.format_exc())


def _encoded(outcome: StepOutcome) -> TurnOutcome:
    state = outcome.state
    if state.split_beats:  # (the onsets are encoded with their bands by the rhythm's side)
        odf = np.concatenate(outcome.odf) if outcome.odf else np.zeros(0, dtype=np.float32)
        rows = np.concatenate(outcome.rows) if outcome.rows else None
        return TurnOutcome(state, odf=odf, rows=rows, blocks=outcome.blocks, final=state.finished,
                           beat_side=outcome.beat_side)
    if state.rhythm is None:
        return TurnOutcome(state, encode_onsets(outcome.onsets, None))
    waiting = state.unbanded
    waiting += outcome.onsets
    banded, state.unbanded = waiting[: len(outcome.bands)], waiting[len(outcome.bands) :]
    return TurnOutcome(state, encode_onsets(banded, outcome.bands), encode_beats(outcome.beats),
                       [time_s for time_s, _ in outcome.beats])


def _start(state: FileAnalysis) -> RhythmSession | None:
    """Probe the file and set up its analysis; with ``split_beats`` (and a rhythm), the rhythm session to
    hand to another worker."""
    source = probe(Path(state.upload))
    state.detector = detector = OnsetDetector(source.sample_rate, source.channels, state.settings)
    rhythm = rhythm_for(detector)
    beat_side = None
    if rhythm is None:
        state.split_beats = False
    elif state.split_beats:
        beat_side = rhythm
    else:
        state.rhythm = rhythm
    state.source = source
    if source.decoder is Decoder.AV:
        info = demux_to_spool(Path(state.upload), Path(state.spool))
        state.cursor = SpoolCursor()
        state.spool_bytes = info.size_bytes
    return beat_side


def _advance(state: FileAnalysis, outcome: StepOutcome) -> None:
    source, detector, rhythm = state.source, state.detector, state.rhythm
    assert source is not None and detector is not None
    chunk = detector.plan.chunk_len
    budget_frames = max(1, state.step_samples // source.channels)
    if budget_frames >= chunk:
        budget_frames -= budget_frames % chunk  # whole passes
    block_frames = chunk * max(1, round(BLOCK_S * source.sample_rate) // chunk)
    found = []
    if source.decoder is Decoder.SOUNDFILE:
        blocks, at_end = _read_soundfile(state, source, budget_frames, block_frames)
    else:
        assert state.cursor is not None
        span = SpanDecoder(Path(state.upload), Path(state.spool), source.sample_rate, source.channels)
        pieces, state.cursor = span.decode(state.cursor, budget_frames)
        blocks = _rejoined(pieces, block_frames)
        at_end = state.cursor is None
    for block in blocks:
        block, clipped = clip_full_scale(block)
        state.clipped_samples += clipped
        new = detector.process(block)
        found += new
        state.frames_done += len(block)
        if state.split_beats:
            _hand_over(detector, new, outcome)
        elif rhythm is not None:
            beats, banded = rhythm.process(detector.take_odf(), detector.take_rows(), new)
            outcome.beats += [(beat.time, beat.bar_position) for beat in beats]
            outcome.bands += [item.band for item in banded]
    if at_end:
        if state.frames_done == 0:
            raise DecodeError(ErrorCode.EMPTY, "the file holds no audio samples")
        new = detector.flush()
        found += new
        state.finished = True
        if state.split_beats:
            outcome.blocks.append((0, new))  # (no more frames)
        elif rhythm is not None:
            _, banded = rhythm.process(np.zeros(0, dtype=np.float32), [], new)
            outcome.bands += [item.band for item in banded + rhythm.flush()]
    outcome.onsets = [(onset.time, onset.strength) for onset in found]


def _hand_over(detector: OnsetDetector, onsets: list[Onset], outcome: StepOutcome) -> None:
    """A block's detection function, its rows (one per value, as RhythmSession.process takes them) and
    onsets, for the rhythm session in another worker."""
    odf, rows = detector.take_odf(), detector.take_rows()
    frames = len(odf)
    if frames:
        outcome.odf.append(odf)
        outcome.rows.append(latest_rows(rows, frames))
    outcome.blocks.append((frames, onsets))


def _rejoined(pieces: list[np.ndarray], block_frames: int) -> list[np.ndarray]:
    """Decoded ``pieces`` (a packet's frames each) as blocks of ``block_frames`` (the last one shorter)."""
    if not pieces or (len(pieces) == 1 and len(pieces[0]) <= block_frames):
        return pieces
    joined = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return [joined[start : start + block_frames] for start in range(0, len(joined), block_frames)]


def _decodable_until(path: str, start: int, most_frames: int) -> int:
    """The frame at which decoding ``path`` from ``start`` fails, found in small reads after a block failed
    (so the error says where, and whether any audio decoded, whatever the block size); at most
    ``most_frames`` past ``start``."""
    position, stop = start, start + most_frames
    with contextlib.suppress(sf.LibsndfileError, RuntimeError), sf.SoundFile(path) as file:
        file.seek(start)
        while position < stop and len(block := file.read(min(SEARCH_FRAMES, stop - position), dtype="int16")):
            position += len(block)
    return position


def _read_soundfile(state: FileAnalysis, source: Source, budget_frames: int, block_frames: int
                    ) -> tuple[list[np.ndarray], bool]:
    """The next blocks of a libsndfile-readable file (of ``block_frames``, the last one may be shorter), and
    whether the file ended."""
    blocks: list[np.ndarray] = []
    got = 0
    dtype = "int16" if source.format_name.rpartition("/")[2] in INT16_SUBTYPES else "float32"
    try:
        with sf.SoundFile(state.upload) as file:
            file.seek(state.frames_done)
            while got < budget_frames:
                block = file.read(min(block_frames, budget_frames - got), dtype=dtype, always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
                got += len(block)
    except (sf.LibsndfileError, RuntimeError) as exc:
        reason = getattr(exc, "error_string", None) or type(exc).__name__
        position = _decodable_until(state.upload, state.frames_done + got, block_frames)
        if position == 0:
            raise DecodeError(ErrorCode.NOT_AUDIO, f"cannot decode the file: {reason}") from None
        raise DecodeError(ErrorCode.TRUNCATED, f"decoding stopped after {position} of {source.frames} "
                          f"frames: {reason}") from None
    at_end = got < budget_frames
    position = state.frames_done + got
    if at_end and source.frames and position < source.frames:
        raise DecodeError(ErrorCode.TRUNCATED, f"the file ends after {position} of the {source.frames} "
                          "frames its header declares")
    return blocks, at_end
