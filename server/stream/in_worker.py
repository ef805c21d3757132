"""The unit of live-stream work that crosses to a pool worker: a stream's next audio, and its onsets back.

Every stream has one lane of the pool (see :mod:`server.pool`), and that lane's worker keeps the stream's
detector between jobs, under the stream's detector key. So only audio goes to the worker and only onsets
come back: the detector's state (a few KiB of spectra and history) never crosses between processes, and
neither process spends time pickling it. A stream has at most one job in flight, so its detector sees its
audio in order.

Beside each detector whose setting ``beats`` is on, the worker keeps the stream's rhythm
(:class:`~server.stream.rhythm_beside.RhythmBeside`): beats and the tempo come back with the onsets, and each
onset comes back with its band once that is decided (a job or so later than without).

If a worker is replaced (it died), its detectors are gone: a job that finds no detector under its key
returns ``lost``, and the session starts a fresh detector from that job's audio on (with a warning).
Everything here runs in the worker process and must pickle.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from server.dsp import DetectorSettings, Onset, OnsetDetector, process_many
from server.stream.rhythm_beside import (
    Advanced,
    BandedTuple,
    BeatTuple,
    RhythmBeside,
    TempoTuple,
    advance_many,
    follows_grid,
)

OnsetTuple = BandedTuple  # (seconds since the stream's first sample, strength, band or None)


class Job(NamedTuple):
    """One stream's next block of work: plain values and the audio, which crosses to the worker out of
    band (through the lane's shared arena, :mod:`server.pool.arena`), not inside the pickle.

    With ``fresh`` the worker makes a new detector with ``settings`` whose first sample is at stream time
    ``offset_s`` (at the start, after a pool restart or a detector fault). Otherwise it continues the
    detector it holds under ``key``: with ``restart_at_s`` set, that detector is flushed first and a fresh
    one analyses ``audio`` from that stream time on (after dropped audio); else ``settings``, when given,
    apply before ``audio``. With ``flush`` the detector is flushed after ``audio`` and forgotten; with
    ``decide`` its pending frames are decided after ``audio`` and it goes on (the ``flush`` message).
    """

    key: str
    sample_rate: int
    channels: int
    dtype: str  # of the samples in ``audio``, as numpy names it ("<f4", "<i2")
    settings: DetectorSettings | None
    audio: bytes | bytearray | memoryview  # interleaved samples (a memoryview: a part of a packed batch's)
    offset_s: float
    fresh: bool = False
    restart_at_s: float | None = None
    flush: bool = False
    odf: bool = False
    decide: bool = False

    @property
    def frames(self) -> int:
        return len(self.audio) // (np.dtype(self.dtype).itemsize * self.channels)

    def samples(self) -> np.ndarray:
        """``audio`` as a read-only ``(frames, channels)`` array."""
        return np.frombuffer(self.audio, self.dtype).reshape(-1, self.channels)

    def block(self) -> np.ndarray:
        """``audio`` as the detector takes it: mono as shape ``(frames,)`` (mono float32 then needs no
        conversion, :func:`~server.dsp.batch.analyse`), else as :meth:`samples`."""
        samples = np.frombuffer(self.audio, self.dtype)
        return samples if self.channels == 1 else samples.reshape(-1, self.channels)

    def __reduce_ex__(self, protocol: Any) -> tuple[type[Job], tuple[Any, ...]]:
        # A plain constructor call, which pickles a few times faster than a named tuple's default
        # reduction; from protocol 5 on, with the audio as an out-of-band buffer (bench/pool_rtt.py).
        audio = pickle.PickleBuffer(self.audio) if protocol >= 5 else self.audio
        return Job, (*self[:5], audio, *self[6:])


class PackedJobs:
    """A batch's jobs as they cross to the worker: each job's plain values, and every job's audio joined in
    one buffer (out of band from pickle protocol 5 on), so that a batch costs one buffer, not one per job.
    It unpickles as the list of jobs, whose audio are memoryviews into that one buffer."""

    __slots__ = ("audio", "values")

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.values = [(*job[:5], len(job.audio), *job[6:]) for job in jobs]  # the audio's bytes in its place
        self.audio = b"".join(job.audio for job in jobs)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any, ...]]:
        audio = pickle.PickleBuffer(self.audio) if protocol >= 5 else self.audio
        return unpack_jobs, (self.values, audio)


def unpack_jobs(values: Sequence[tuple[Any, ...]], audio: bytes | bytearray | memoryview) -> list[Job]:
    """The jobs of a :class:`PackedJobs`, each one's audio a view into ``audio``."""
    view, at, jobs = memoryview(audio), 0, []
    for value in values:
        size = value[5]
        jobs.append(Job._make((*value[:5], view[at:at + size], *value[6:])))
        at += size
    return jobs


class JobResult(NamedTuple):
    onsets: Sequence[OnsetTuple]
    odf: np.ndarray | None = None
    error: str | None = None
    lost: bool = False  # the worker held no detector under the job's key: nothing was analysed
    beats: Sequence[BeatTuple] = ()  # committed in this job: (stream time s, bpm, confidence, bar position)
    tempo: TempoTuple | None = None  # at this job's last beat: (bpm, confidence, next beat's stream time s)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.lost

    def __reduce_ex__(self, protocol: Any) -> tuple[type[JobResult], tuple[Any, ...]]:
        return JobResult, tuple(self)  # a plain constructor call, as Job's: half the pickling time


# The result of most jobs (no onset, no detection function asked for): one object, so that a batch's
# answer pickles it once and refers to it for every other job (the pickle's memo), and the event loop
# unpickles it once per batch instead of once per stream.
NOTHING_FOUND = JobResult(())


class ResidentDetectors:
    """The detectors a worker process keeps for the live streams of its lane, by detector key."""

    def __init__(self) -> None:
        self._detectors: dict[str, OnsetDetector] = {}
        self._rhythms: dict[str, RhythmBeside] = {}

    def __len__(self) -> int:
        return len(self._detectors)

    def take(self, key: str) -> OnsetDetector | None:
        return self._detectors.pop(key, None)

    def take_rhythm(self, key: str) -> RhythmBeside | None:
        return self._rhythms.pop(key, None)

    def keep(self, key: str, detector: OnsetDetector, rhythm: RhythmBeside | None = None) -> None:
        self._detectors[key] = detector
        if rhythm is not None:
            self._rhythms[key] = rhythm

    def forget(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._detectors.pop(key, None)
            self._rhythms.pop(key, None)


# The one piece of state a worker process keeps between pool calls. A pool call names a function of a
# module, so a worker reaches state of its own only through its modules; in the server this stays empty.
RESIDENT = ResidentDetectors()


def _shift(onsets: list[Onset], offset_s: float) -> list[OnsetTuple]:
    return [(onset.time + offset_s, onset.strength, None) for onset in onsets]


def _shift_banded(onsets: list[BandedTuple], offset_s: float) -> list[OnsetTuple]:
    return [(time_s + offset_s, strength, band) for time_s, strength, band in onsets]


def _end(detector: OnsetDetector, rhythm: RhythmBeside | None, offset_s: float) -> list[OnsetTuple]:
    """Flush the detector (and its rhythm, which decides every band still waiting)."""
    if rhythm is None:
        return _shift(detector.flush(), offset_s)
    return _shift_banded(rhythm.finish(detector.flush()), offset_s)


def _decided(detector: OnsetDetector, rhythm: RhythmBeside | None, offset_s: float) -> list[OnsetTuple]:
    """A client's flush: the detector's pending onsets and, with rhythm, every onset still waiting for its
    band, banded from the audio so far (the stream goes on; frames not in yet count as no rise)."""
    if rhythm is None:
        return _shift(detector.decide_pending(), offset_s)
    return _shift_banded(rhythm.finish(detector.decide_pending()), offset_s)


@dataclass(slots=True)
class _Running:
    """A job between its steps in the worker: the live detector and what it has produced so far."""

    job: Job
    detector: OnsetDetector
    offset_s: float
    onsets: list[OnsetTuple]
    rhythm: RhythmBeside | None = None
    found: list[Onset] | None = None  # with a rhythm: the detector's onsets of this job, band not decided
    advanced: Advanced | None = None  # with a rhythm: its part of the batch's advance_many


def _failed(exc: Exception) -> JobResult:
    return JobResult([], None, f"{type(exc).__name__}: {exc}")


def _prepare(job: Job, resident: ResidentDetectors) -> _Running | JobResult:
    """Take (or make) the job's detector and apply a restart or new settings, before its audio."""
    detector, rhythm = resident.take(job.key), resident.take_rhythm(job.key)
    if job.fresh:
        detector = OnsetDetector(job.sample_rate, job.channels, job.settings)
        return _Running(job, detector, job.offset_s, [], RhythmBeside.beside(detector))
    if detector is None:
        return JobResult([], lost=True)
    onsets: list[OnsetTuple] = []
    offset_s = job.offset_s
    if job.restart_at_s is not None:
        onsets += _end(detector, rhythm, offset_s)
        detector, offset_s = OnsetDetector(job.sample_rate, job.channels, job.settings), job.restart_at_s
        rhythm = RhythmBeside.beside(detector)
    elif job.settings is not None:
        detector.configure(job.settings)
        if rhythm is not None and not follows_grid(job.settings):  # beats turned off
            onsets += _shift_banded(rhythm.finish([]), offset_s)
            detector.tap_rows(False)
            rhythm = None
        elif rhythm is None:  # beats turned on: from here on
            rhythm = RhythmBeside.beside(detector)
    return _Running(job, detector, offset_s, onsets, rhythm)


def _finish(running: _Running, resident: ResidentDetectors) -> JobResult:
    """After the job's audio: take the detection function, flush at the end or keep the detector."""
    detector, job, rhythm, offset_s = running.detector, running.job, running.rhythm, running.offset_s
    beats: list[BeatTuple] = []
    tempo: TempoTuple | None = None
    odf: np.ndarray | None = None
    if rhythm is None:
        if job.odf:
            odf = detector.take_odf()
        else:
            detector.drop_odf()  # unwanted, but not kept for later either
    else:
        odf, new_beats, banded = running.advanced or rhythm.process(detector, running.found or [])
        if banded:
            running.onsets += _shift_banded(banded, offset_s)
        if new_beats:  # the tempo as of the latest beat (asking for it every job would cost ~20 % more)
            beats = [(time_s + offset_s, bpm, confidence, bar) for time_s, bpm, confidence, bar in new_beats]
            now = rhythm.tempo()
            tempo = None if now is None else (now[0], now[1], now[2] + offset_s)
    if job.flush:
        running.onsets += _end(detector, rhythm, offset_s)
    else:
        if job.decide:  # a client's flush: the pending frames and bands, decided as if the stream ended
            running.onsets += _decided(detector, rhythm, running.offset_s)
        resident.keep(job.key, detector, rhythm)
    if not running.onsets and not job.odf and not beats and tempo is None:
        return NOTHING_FOUND
    return JobResult(running.onsets, odf if job.odf else None, beats=beats, tempo=tempo)


def run_batch(jobs: list[Job], forget: Sequence[str] = (),
              resident: ResidentDetectors = RESIDENT) -> list[JobResult]:
    """Analyse a batch of jobs from different streams of one lane in one pool call.

    Every job's audio goes through :func:`~server.dsp.process_many` together, so the detector's fixed cost
    per call (FFT set-up, filterbank, detection function) is paid once per pass, not once per stream. If
    that fails (one bad block; no detector has changed then), each job runs alone, so that one stream's
    fault cannot fail the others; the rhythms beside them likewise (:func:`advance_many`). A failed job's
    detector is forgotten, so its stream sends that audio again to a fresh one. The detectors of streams
    that ended are forgotten first (``forget``).
    """
    resident.forget(forget)
    prepared: list[_Running | JobResult] = []
    for job in jobs:
        try:
            prepared.append(_prepare(job, resident))
        except Exception as exc:
            prepared.append(_failed(exc))
    running = [item for item in prepared if isinstance(item, _Running) and item.job.audio]
    try:
        found: list[list[Onset] | Exception] = list(
            process_many([(item.detector, item.job.block()) for item in running]))
    except Exception:
        found = [_process_alone(item) for item in running]
    failures: dict[int, Exception] = {}
    rhythmic: list[_Running] = []
    for item, onsets in zip(running, found, strict=True):
        if isinstance(onsets, Exception):
            failures[id(item)] = onsets
        elif item.rhythm is not None:
            item.found = onsets
            rhythmic.append(item)
        elif onsets:
            item.onsets += _shift(onsets, item.offset_s)
    if len(rhythmic) > 1:  # every rhythm in shared passes (a lone one runs in _finish)
        outcomes = advance_many([(i.rhythm, i.detector, i.found or []) for i in rhythmic if i.rhythm])
        for item, outcome in zip(rhythmic, outcomes, strict=True):
            if isinstance(outcome, Exception):  # its rhythm is gone: the stream starts afresh
                failures[id(item)] = outcome
            else:
                item.advanced = outcome
    results: list[JobResult] = []
    for step in prepared:
        if isinstance(step, JobResult):
            results.append(step)
        elif id(step) in failures:
            results.append(_failed(failures[id(step)]))
        else:
            try:
                results.append(_finish(step, resident))
            except Exception as exc:
                results.append(_failed(exc))
    return results


def _process_alone(item: _Running) -> list[Onset] | Exception:
    try:
        return item.detector.process(item.job.block())
    except Exception as exc:
        return exc


WARM_UP_RATES_HZ = (48000, 44100)  # the rates browsers and files mostly bring
WARM_UP_S = 2.0  # of clicks, in live-stream jobs of WARM_UP_JOB_S: onsets, bands and the tracker all run
WARM_UP_JOB_S = 0.02


def warm_up(sample_rates_hz: Sequence[int] = WARM_UP_RATES_HZ) -> int:
    """Run a short click track through :func:`run_batch` at each rate as a live stream would (default
    settings, then a flush), with detectors of its own; returns this worker's pid.

    A worker's first stream otherwise pays the one-off costs in its first jobs (FFT plans, filterbanks and
    the tracker's tables built; the shared library code, which a process forked from the forkserver maps
    but has not touched, faulted in): run once when the worker starts, they stay out of the first
    stream's latency and of the memory its streams add."""
    for rate_hz in sample_rates_hz:
        resident = ResidentDetectors()
        clicks = np.zeros(round(WARM_UP_S * rate_hz), np.float32)
        for start in range(rate_hz // 10, len(clicks), rate_hz // 2):
            clicks[start:start + rate_hz // 1000] = 0.5
        step = round(WARM_UP_JOB_S * rate_hz)
        for at in range(0, len(clicks), step):
            audio = clicks[at:at + step].tobytes()
            run_batch([Job("warm-up", rate_hz, 1, "<f4", DetectorSettings() if at == 0 else None, audio,
                           0.0, fresh=at == 0)], resident=resident)
        run_batch([Job("warm-up", rate_hz, 1, "<f4", None, b"", 0.0, flush=True)], resident=resident)
    return os.getpid()
