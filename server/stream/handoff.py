"""What one live stream has handed to its pool lane, and what it hands next.

The stream's detector lives in its lane's worker (:mod:`server.stream.in_worker`); the session on the
event loop only keeps this bookkeeping: the cursor into its ring buffer (the next frame to hand off), the
settings changes parked until the audio they apply from is handed off, the generation of the detector (a
fresh detector gets a fresh key), whether the worker holds it, the one job in flight, and the job to send
again after a failure with the count of failures in a row.
"""

from __future__ import annotations

from collections import deque

from server.dsp import DetectorSettings
from server.protocol.stream_messages import AudioFormat
from server.stream.in_worker import Job
from server.stream.ring import RingBuffer

MAX_CONSECUTIVE_FAILURES = 3  # detector re-initialisations in a row before the stream is ended
# Audio in one job, at most: a stream far behind catches up over several batches instead of holding up
# every stream of one long batch.
MAX_JOB_S = 0.5


class Handoff:
    """The hand-off of one stream's audio to its detector in the pool, one job at a time."""

    def __init__(self, stream_id: str, audio_format: AudioFormat, settings: DetectorSettings,
                 dtype: str, channels: int) -> None:
        self._stream_id = stream_id
        self._sample_rate = audio_format.sample_rate
        self._channels = channels  # of the samples a job carries (1 once downmixed on arrival)
        self._dtype = dtype  # of the samples a job carries, e.g. "<f4"
        self._max_job_frames = max(1, round(MAX_JOB_S * audio_format.sample_rate))
        self._generation = 0  # counts fresh detectors: the worker keeps each under its own key
        self._key = f"{stream_id}/0"  # the current detector's key (made once per generation)
        self._resident = False  # whether the lane's worker holds this stream's detector
        self._active = settings  # settings of the audio handed off last
        self._changes: deque[tuple[int, DetectorSettings]] = deque()  # (first frame, settings) to apply
        self.offset_s = 0.0  # stream time of the current detector's first sample
        self.next = 0  # absolute frame index of the next frame to hand off
        self.job_start = 0  # absolute frame index of the first frame of the last job taken
        self.in_flight: Job | None = None
        self._retry: Job | None = None
        self._failures = 0

    @property
    def key(self) -> str:
        """The key of the stream's current detector in its lane's worker."""
        return self._key

    @property
    def holds_detector(self) -> bool:
        """Whether the lane's worker may still hold the stream's detector (to forget once it ends)."""
        return self._resident or self.in_flight is not None

    @property
    def has_retry(self) -> bool:
        return self._retry is not None

    def park(self, at_frame: int, settings: DetectorSettings) -> None:
        """Apply ``settings`` from absolute frame ``at_frame`` on (the next audio received)."""
        changes = self._changes
        if changes and changes[-1][0] == at_frame:
            changes.pop()  # no audio since the last change: it never applies
        changes.append((at_frame, settings))

    def take(self, ring: RingBuffer, stopping: bool, odf: bool, decide: bool = False) -> Job | None:
        """The next job from ``ring`` (a retry first), or ``None``; at most one job is in flight.

        With ``stopping`` the job that empties the ring flushes the detector (even an empty one); with
        ``decide`` (a ``flush`` message) it decides the detector's pending frames and keeps it."""
        if self.in_flight is not None:
            return None
        if self._retry is not None:
            job, self._retry = self._retry, None
            self.in_flight = job
            return job
        changes = self._changes
        start = ring.start
        frames = waiting = len(ring)
        due = 0  # settings changes that apply from `start`
        if changes:
            while due < len(changes) and changes[due][0] <= start:
                due += 1
            if due < len(changes):
                frames = min(waiting, changes[due][0] - start)
        if frames > self._max_job_frames:
            frames = self._max_job_frames
        flush = stopping and frames == waiting
        decide = decide and not flush and frames == waiting
        if frames == 0 and not flush and not (decide and self._resident):
            return None
        settings: DetectorSettings | None = None
        for _ in range(due):
            settings = changes.popleft()[1]
        if flush:
            changes.clear()
        if settings is not None:
            self._active = settings
        sample_rate = self._sample_rate
        offset_s, fresh, restart_at_s = self.offset_s, False, None
        if not self._resident:
            offset_s, fresh, settings = start / sample_rate, True, self._active
        elif start > self.next:  # audio was dropped: start afresh at the first frame kept
            restart_at_s, settings = start / sample_rate, self._active
        audio = ring.read_bytes(frames)
        job = Job(self._key, sample_rate, self._channels, self._dtype, settings, audio, offset_s, fresh,
                  restart_at_s, flush, odf, decide)
        self.job_start, self.next = start, start + frames
        self.in_flight = job
        return job

    def succeeded(self, job: Job) -> None:
        """``job`` (taken last) was analysed: the worker now holds its detector unless it flushed it."""
        self._failures = 0
        self._resident = not job.flush
        if job.fresh or job.restart_at_s is not None:
            self.offset_s = job.offset_s if job.fresh else float(job.restart_at_s or 0.0)

    def failed(self, job: Job) -> bool:
        """``job`` failed and its detector is gone: send its audio again to a fresh detector, unless that
        happened more than :data:`MAX_CONSECUTIVE_FAILURES` times in a row (then ``False``)."""
        self._failures += 1
        self._resident = False
        self._generation += 1
        self._key = f"{self._stream_id}/{self._generation}"
        if self._failures > MAX_CONSECUTIVE_FAILURES:
            return False
        self._retry = job._replace(key=self.key, settings=self._active, fresh=True, restart_at_s=None,
                                   offset_s=self.job_start / self._sample_rate)
        return True
