"""The unit of live-stream work that crosses to a pool worker: a detector, its next audio, and back.

A stream's detector state travels with its audio to whichever worker runs the batch, and its updated
state comes back in the result; a stream has at most one job in flight, so its state stays consistent.
The state crosses as pickled bytes that only workers unpickle: the server process never rebuilds a
detector, so the pool's helper threads in the server hold the GIL (and delay the event loop) as little as
possible. Everything here runs in the worker process and must pickle.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np

from server.dsp import DetectorSettings, Onset, OnsetDetector, process_many

OnsetTuple = tuple[float, float]  # (seconds since the stream's first sample, strength)


@dataclass(slots=True)
class Job:
    """One stream's next block of work.

    ``state`` (a detector frozen by :func:`freeze`) is ``None`` when a fresh detector must be made (after
    a gap from dropped audio, or after a pool restart); it then starts at stream time ``offset_s`` with
    ``settings``. Otherwise ``settings``, when given, is applied before ``audio``. With ``restart_at_s``
    set, the given detector is flushed first and a fresh one analyses ``audio`` from that stream time on.
    """

    state: bytes | None
    sample_rate: int
    channels: int
    settings: DetectorSettings | None
    audio: np.ndarray
    offset_s: float
    restart_at_s: float | None = None
    flush: bool = False
    odf: bool = False


@dataclass(slots=True)
class JobResult:
    state: bytes | None
    onsets: list[OnsetTuple]
    odf: np.ndarray | None = None
    error: str | None = None


def freeze(detector: OnsetDetector) -> bytes:
    """A detector's state as bytes, to cross between processes untouched."""
    return pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)


def thaw(state: bytes) -> OnsetDetector:
    detector: OnsetDetector = pickle.loads(state)
    return detector


def _shift(onsets: list[Onset], offset_s: float) -> list[OnsetTuple]:
    return [(onset.time + offset_s, onset.strength) for onset in onsets]


@dataclass(slots=True)
class _Running:
    """A job between its steps in the worker: the live detector and what it has produced so far."""

    job: Job
    detector: OnsetDetector
    offset_s: float
    onsets: list[OnsetTuple]


def _failed(exc: Exception) -> JobResult:
    return JobResult(None, [], None, f"{type(exc).__name__}: {exc}")


def _prepare(job: Job) -> _Running:
    """Thaw (or make) the job's detector and apply a restart or new settings, before its audio."""
    onsets: list[OnsetTuple] = []
    detector = None if job.state is None else thaw(job.state)
    offset_s = job.offset_s
    if detector is not None and job.restart_at_s is not None:
        onsets += _shift(detector.flush(), offset_s)
        detector, offset_s = None, job.restart_at_s
    if detector is None:
        detector = OnsetDetector(job.sample_rate, job.channels, job.settings)
    elif job.settings is not None:
        detector.configure(job.settings)
    return _Running(job, detector, offset_s, onsets)


def _finish(running: _Running) -> JobResult:
    """After the job's audio: take the detection function, flush at the end, freeze the state."""
    detector, job = running.detector, running.job
    odf = detector.take_odf()  # taken even when unwanted, so the detector's buffer stays empty
    if job.flush:
        running.onsets += _shift(detector.flush(), running.offset_s)
    return JobResult(freeze(detector), running.onsets, odf if job.odf else None)


def run_job(job: Job) -> JobResult:
    """Analyse one job alone; any failure is returned in ``error``."""
    try:
        running = _prepare(job)
        if len(job.audio):
            running.onsets += _shift(running.detector.process(job.audio), running.offset_s)
        return _finish(running)
    except Exception as exc:  # a detector fault must not fail the other streams of the batch
        return _failed(exc)


def run_batch(jobs: list[Job]) -> list[JobResult]:
    """Analyse a batch of jobs from different streams in one pool call.

    Every job's audio goes through :func:`~server.dsp.process_many` together, so the detector's fixed cost
    per call (FFT set-up, filterbank, detection function) is paid once per pass, not once per stream.
    If that fails, each job is run alone so that one stream's fault cannot fail the others.
    """
    prepared: list[_Running | JobResult] = []
    for job in jobs:
        try:
            prepared.append(_prepare(job))
        except Exception as exc:
            prepared.append(_failed(exc))
    running = [item for item in prepared if isinstance(item, _Running) and len(item.job.audio)]
    try:
        found = process_many([(item.detector, item.job.audio) for item in running])
    except Exception:  # e.g. one bad block: nothing changed, so each job runs alone (fresh from its state)
        return [run_job(job) for job in jobs]
    for item, onsets in zip(running, found, strict=True):
        item.onsets += _shift(onsets, item.offset_s)
    results: list[JobResult] = []
    for step in prepared:
        if isinstance(step, JobResult):
            results.append(step)
            continue
        try:
            results.append(_finish(step))
        except Exception as exc:
            results.append(_failed(exc))
    return results
