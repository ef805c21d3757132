"""One live stream: its ring buffer, its detector's state, its counters, and the events it emits.

A session knows nothing of WebSockets. Its transport (WebSocket, WebRTC, ...) feeds it audio arrays and
control calls and receives its events through a :class:`StreamSink`; the session also publishes the
events subscribers see to the :class:`~server.events.hub.EventHub`. The scheduler takes the session's
next :class:`~server.stream.in_worker.Job` when the session has audio and no job in flight, and hands back
the result. The detector itself lives in the worker of the session's pool lane, under its detector key;
what the session has handed off is kept by its :class:`~server.stream.handoff.Handoff`.

Every event goes out through one fan-out: the transport's sink, the event hub (subscribers) and, when
the server has OSC targets, the OSC output (onsets of streams whose ``osc`` option names targets).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from server.dsp.blocks import to_mono
from server.events.hub import EventHub
from server.events.link import LinkOutput, check_link
from server.events.osc import OscSender, check_targets, onset_forwarder
from server.protocol import stream_messages as msg
from server.protocol.errors import CloseCode, ProtocolError
from server.protocol.stream_messages import AudioFormat, Event
from server.stream.arrival import ArrivalClock
from server.stream.handoff import MAX_CONSECUTIVE_FAILURES, Handoff
from server.stream.in_worker import Job, JobResult
from server.stream.ring import RingBuffer
from server.stream.settings import StreamSettings, detector_timing

ARRIVAL_KEEP_S = 2.0  # arrival marks kept behind the analysed audio, to date onsets reported late
ARRIVAL_FORGET_EVERY_S = 0.5  # older marks are forgotten once per this much analysed audio, not every job
DROP_WARNING_INTERVAL_S = 1.0


def buffer_plan(audio_format: AudioFormat, max_buffer_s: float,
                max_buffer_bytes: int) -> tuple[int, int, np.dtype[Any]]:
    """How a stream keeps the audio waiting for analysis: (capacity in frames, channels, dtype).

    Several channels are averaged to mono float32 as they arrive (what the detector analyses anyway), so
    a stream costs what its analysis needs, not its channel count; mono keeps its own encoding. The
    capacity is ``max_buffer_s`` of audio, or fewer frames if they would take more than
    ``max_buffer_bytes``.
    """
    channels = 1
    dtype = np.dtype(audio_format.encoding.dtype) if audio_format.channels == 1 else np.dtype(np.float32)
    frames = round(max_buffer_s * audio_format.sample_rate)
    return max(1, min(frames, max_buffer_bytes // (dtype.itemsize * channels))), channels, dtype


class StreamSink(Protocol):
    """Where a session's events go on the transport that feeds it."""

    def deliver(self, event: Event) -> None:
        """An event for the publisher (onset, status, warning, odf). Must not block."""

    def fault(self, error: ProtocolError) -> None:
        """The stream must end with this error: the transport reports it, calls ``stop()``, then closes."""


class _Detached:
    """The sink of a session that has ended: it has nothing more to deliver."""

    def deliver(self, event: Event) -> None:
        pass

    def fault(self, error: ProtocolError) -> None:
        pass


DETACHED: StreamSink = _Detached()  # one for every ended session: it keeps nothing


class State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class StreamSummary:
    duration_s: float
    onsets: int
    reason: str
    dropped_s: float = 0.0  # audio dropped because analysis fell behind, in all


@dataclass(frozen=True, slots=True)
class StreamLinks:
    """What a session reports to besides its transport; the stream service makes one for every session."""

    hub: EventHub  # subscribers and the directory of live streams
    notify: Callable[[StreamSession], None]  # the scheduler: the session may have work
    on_end: Callable[[StreamSession], None]  # the service: the session has ended
    osc: OscSender | None = None  # the server's OSC targets
    on_onset: Callable[[float], None] | None = None  # observer of each onset's latency (s from arrival)
    link: LinkOutput | None = None  # the server's Ableton Link session (--link)


class StreamSession:
    # Slots, not an instance dict: one per stream in the event loop (bench/README.md, "Memory per stream").
    __slots__ = ("__weakref__", "_analysed", "_arrivals", "_consumers", "_downmix", "_dropped", "_end_reason",
                 "_faulted", "_finished", "_flush_wanted", "_forget_every", "_handoff", "_keep_frames",
                 "_last_drop_warning_s", "_links", "_next_forget", "_odf_count", "_onsets", "_ring", "_sink",
                 "_status_mark", "_tempo", "buffer_bytes", "client", "end_reason", "format", "hop_s", "lane",
                 "last_activity_s", "latency_s", "settings", "started_at", "state", "stream_id", "transport")

    def __init__(self, stream_id: str, audio_format: AudioFormat, settings: StreamSettings, *,
                 max_buffer_s: float, sink: StreamSink, links: StreamLinks, lane: int = 0, client: str = "",
                 transport: str = "websocket", max_buffer_bytes: int = 1 << 62) -> None:
        self.stream_id = stream_id
        self.lane = lane  # the pool lane whose worker holds this stream's detector
        self.format = audio_format
        self.settings = settings
        self.client = client
        self.transport = transport
        self.state = State.RUNNING
        self.started_at = time.time()
        self._sink = sink
        self._links = links
        osc = links.osc
        # The event fan-out: every consumer of this stream's events, in order.
        self._consumers: tuple[Callable[[Event], None], ...] = (
            sink.deliver, functools.partial(links.hub.publish, stream_id),
            *((onset_forwarder(osc, stream_id, self._osc_names),) if osc is not None and osc.names else ()),
            *((links.link.forwarder(stream_id),) if links.link is not None and links.link.enabled else ()))
        self._arrivals = ArrivalClock(audio_format.sample_rate)
        self._keep_frames = round(ARRIVAL_KEEP_S * audio_format.sample_rate)
        self._forget_every = round(ARRIVAL_FORGET_EVERY_S * audio_format.sample_rate)
        self._next_forget = 0  # analysed frame from which marks are forgotten next
        self.latency_s, self.hop_s = detector_timing(audio_format.sample_rate, settings.detector)
        capacity, channels, dtype = buffer_plan(audio_format, max_buffer_s, max_buffer_bytes)
        self._ring = RingBuffer(capacity, channels, dtype)
        self._downmix = channels != audio_format.channels
        self.buffer_bytes = capacity * channels * dtype.itemsize  # the most its ring may hold
        self._handoff = Handoff(stream_id, audio_format, settings.detector, self._ring.dtype.str, channels)
        self._analysed = 0  # absolute frame index analysed so far
        self._odf_count = 0
        self._dropped = 0
        self._onsets = 0
        self._tempo: tuple[float, float, float] | None = None  # (bpm, confidence, next beat time s)
        self._faulted = False
        self._flush_wanted = False  # a ``flush`` message waits for its job
        self._end_reason = ""
        self.end_reason = ""  # why the stream ended, once it has (as in the subscribers' ``ended``)
        self._last_drop_warning_s = -DROP_WARNING_INTERVAL_S
        self._status_mark = (0, 0)
        self.last_activity_s = time.monotonic()
        self._finished: asyncio.Future[StreamSummary] = asyncio.get_running_loop().create_future()
        self._follow_link()

    # --- Counters ----------------------------------------------------------------------------------------

    def _seconds(self, frames: int) -> float:
        return frames / self.format.sample_rate

    @property
    def received_s(self) -> float:
        return self._seconds(self._ring.end)

    @property
    def analysed_s(self) -> float:
        return self._seconds(self._analysed)

    @property
    def lag_s(self) -> float:
        """Audio kept but not analysed yet: waiting in the ring buffer or in the job in flight."""
        job = self._handoff.in_flight
        return self._seconds(len(self._ring) + (job.frames if job is not None else 0))

    @property
    def dropped_s(self) -> float:
        return self._seconds(self._dropped)

    @property
    def onsets(self) -> int:
        return self._onsets

    def describe(self) -> dict[str, Any]:
        """The stream's entry in ``GET /api/v3/streams``."""
        return {
            "stream_id": self.stream_id,
            "transport": self.transport,
            "state": self.state.value,
            "sample_rate": self.format.sample_rate,
            "channels": self.format.channels,
            "encoding": self.format.encoding.value,
            "settings": self.settings.to_dict(),
            "latency_ms": round(self.latency_s * 1000.0, 6),
            "started_at": self.started_at,
            "received_s": round(self.received_s, 6),
            "analysed_s": round(self.analysed_s, 6),
            "lag_s": round(self.lag_s, 6),
            "dropped_s": round(self.dropped_s, 6),
            "onsets": self._onsets,
        }

    # --- Transport side ----------------------------------------------------------------------------------

    def touch(self) -> None:
        """Note activity from the client (any message counts against the idle timeout)."""
        self.last_activity_s = time.monotonic()

    def feed(self, frames: np.ndarray) -> None:
        """Take audio, shape ``(n, channels)`` in the stream's dtype. Ignored once the stream is stopping."""
        self.last_activity_s = now_s = time.monotonic()
        if self.state is not State.RUNNING:
            return
        if self._downmix:  # several channels are averaged to mono as they arrive (buffer_plan)
            frames = to_mono(frames, self.format.channels, check=False)[:, None]
        ring = self._ring
        dropped = ring.write(frames)
        self._arrivals.mark(ring.end, time.time())
        if dropped:
            self._dropped += dropped
            if now_s - self._last_drop_warning_s >= DROP_WARNING_INTERVAL_S:
                self._last_drop_warning_s = now_s
                self._emit(msg.warning(
                    self.stream_id, "audio_dropped",
                    f"analysis fell more than {self._seconds(self._ring.capacity):g} s behind; the oldest "
                    "audio was dropped", dropped_s=round(self.dropped_s, 6)))
        if self._handoff.in_flight is None:
            self._links.notify(self)

    def configure(self, values: Mapping[str, Any]) -> StreamSettings:
        """Apply new settings from the next audio on; raises :class:`SettingsError` and keeps the old ones."""
        new = StreamSettings.from_mapping(values, base=self.settings)
        check_targets(self._links.osc, new.options.osc)
        check_link(self._links.link, new.options.link)
        if new.detector != self.settings.detector:
            self._handoff.park(self._ring.end, new.detector)
        self.settings = new
        self._follow_link()
        return new

    def request_flush(self) -> None:
        """The publisher's ``flush``: the next job takes everything received so far and decides the
        detector's pending frames; ``flushed`` follows its onsets. Ignored once the stream is stopping."""
        if self.state is State.RUNNING:
            self._flush_wanted = True
            if self._handoff.in_flight is None:
                self._links.notify(self)

    def request_stop(self, reason: str = "stopped") -> None:
        """Start ending the stream: every received sample is still analysed and its onsets emitted.

        ``reason`` (``stopped``, ``disconnected``) goes into the subscribers' ``ended`` event unless a
        fault already named one. Returns at once; :meth:`stop` waits for the end.
        """
        self._end_reason = self._end_reason or reason
        if self.state is State.RUNNING:
            self.state = State.STOPPING
            if self._handoff.in_flight is None:
                self._links.notify(self)

    async def stop(self, reason: str = "stopped") -> StreamSummary:
        """Analyse every received sample, emit the remaining onsets, end the stream; returns its summary."""
        self.request_stop(reason)
        return await asyncio.shield(self._finished)

    def fault(self, error: ProtocolError) -> None:
        """Report a fatal error to the transport, once (e.g. the idle timeout)."""
        if not self._faulted and self.state is not State.ENDED:
            self._faulted = True
            self._end_reason = error.code
            self._sink.fault(error)

    def abandon(self, reason: str) -> None:
        """End at once without analysing what is left (server shutting down)."""
        self._finish(reason)

    # --- Scheduler side ----------------------------------------------------------------------------------

    @property
    def detector_key(self) -> str:
        """The key of this stream's current detector in its lane's worker."""
        return self._handoff.key

    @property
    def holds_detector(self) -> bool:
        """Whether the lane's worker may still hold this stream's detector (to forget once it ends)."""
        return self._handoff.holds_detector

    @property
    def wants_work(self) -> bool:
        handoff = self._handoff
        return handoff.in_flight is None and self.state is not State.ENDED and (
            handoff.has_retry or len(self._ring) > 0 or self.state is State.STOPPING or self._flush_wanted)

    def take_job(self) -> Job | None:
        """The next block of work, or ``None``; at most one job is in flight per stream."""
        if self.state is State.ENDED:
            return None
        wanted = self._flush_wanted and self.state is State.RUNNING
        job = self._handoff.take(self._ring, self.state is State.STOPPING, self.settings.options.odf, wanted)
        if wanted and (job is None or job.decide):
            self._flush_wanted = False
            if job is None:  # no detector yet and no audio: nothing is pending
                self._reply_flushed()
        return job

    def complete(self, job: Job, result: JobResult) -> None:
        """Take back the result of the job in flight."""
        handoff = self._handoff
        handoff.in_flight = None
        if self.state is State.ENDED:
            return
        if result.lost:
            self._reinitialise(job, "pool_restarted", "a detection worker was replaced; the detector was "
                               "re-initialised and goes on")
            return
        if result.error is not None:
            self._reinitialise(job, "detector_failed", f"the detector failed: {result.error}")
            return
        handoff.succeeded(job)
        restarted = job.fresh or job.restart_at_s is not None
        if restarted:
            self._odf_count = 0
        self._analysed = handoff.next
        sample_rate, on_onset = self.format.sample_rate, self._links.on_onset
        for time_s, strength, band in result.onsets:
            self._onsets += 1
            now_s = time.time()
            wall_time_s = self._arrivals.wall_time(round(time_s * sample_rate), now_s)
            if on_onset is not None:
                on_onset(now_s - wall_time_s)
            self._emit(msg.onset(self.stream_id, time_s, strength, wall_time_s, band))
        for time_s, bpm, confidence, bar_position in result.beats:
            wall_time_s = self._arrivals.wall_time(round(time_s * sample_rate), time.time())
            self._emit(msg.beat(self.stream_id, time_s, bpm, confidence, wall_time_s, bar_position))
        if result.tempo is not None:
            self._tempo = result.tempo
        beats = self.settings.detector.beats
        if not beats or restarted:
            self._tempo = result.tempo if beats else None
        if self._analysed >= self._next_forget:  # at most every ARRIVAL_FORGET_EVERY_S of analysed audio
            self._arrivals.forget_before(self._analysed - self._keep_frames)
            self._next_forget = self._analysed + self._forget_every
        if result.odf is not None and len(result.odf):
            start_s = handoff.offset_s + self._odf_count * self.hop_s
            self._odf_count += len(result.odf)
            self._emit(msg.odf(self.stream_id, start_s, self.hop_s, [float(v) for v in result.odf]))
        if self.settings.options.ack and not job.flush:  # flow control: the publisher only, not subscribers
            self._sink.deliver(msg.ack(self.stream_id, received_s=self.received_s, analysed_s=self.analysed_s,
                                       lag_s=self.lag_s, dropped_s=self.dropped_s))
        if job.decide:
            self._reply_flushed()
        if job.flush:
            self.emit_status(force=True)
            self._finish(self._end_reason or "stopped")
        elif self.wants_work:
            self._links.notify(self)

    def pool_restarted(self, job: Job) -> None:
        """The pool died under this job: re-initialise the detector and analyse the job's audio again."""
        self._handoff.in_flight = None
        if self.state is not State.ENDED:
            self._reinitialise(job, "pool_restarted",
                               "a detection worker died; the detector was re-initialised and goes on")

    def _reinitialise(self, job: Job, code: str, message: str) -> None:
        if not self._handoff.failed(job):
            self.fault(ProtocolError(code, f"{message}; gave up after {MAX_CONSECUTIVE_FAILURES} attempts",
                                     CloseCode.SERVER_FAULT))
            self._finish(code)
            return
        at_s = round(self._seconds(self._handoff.job_start), 6)
        self._emit(msg.warning(self.stream_id, code, message, at_s=at_s))
        self._links.notify(self)

    # --- Events ------------------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        for consume in self._consumers:
            consume(event)

    def _reply_flushed(self) -> None:
        self._sink.deliver(msg.flushed(self.stream_id, received_s=self.received_s,
                                       analysed_s=self.analysed_s, onsets=self._onsets))

    def _osc_names(self) -> tuple[str, ...]:
        return self.settings.options.osc

    def _follow_link(self) -> None:
        """Claim or let go of the server's Link session as the option ``link`` says."""
        link = self._links.link
        if link is None or self.state is State.ENDED:
            return
        if self.settings.options.link:
            link.claim(self.stream_id, self._link_taken)
        else:
            link.release(self.stream_id)

    def _link_taken(self, by: str) -> None:
        """Another stream claimed the Link session: this one's option ``link`` turns false."""
        self.settings = dataclasses.replace(
            self.settings, options=dataclasses.replace(self.settings.options, link=False))
        self._emit(msg.warning(self.stream_id, "link_taken",
                               f"stream {by} now publishes its tempo and beat phase to Link; this stream's "
                               "option link is now false", by=by))

    def emit_status(self, force: bool = False) -> None:
        """Emit a status event if audio arrived or was analysed since the last one (or ``force``)."""
        mark = (self._ring.end, self._analysed)
        if (mark != self._status_mark or force) and self.state is not State.ENDED:
            self._status_mark = mark
            self._emit(msg.status(self.stream_id, received_s=self.received_s, analysed_s=self.analysed_s,
                                  lag_s=self.lag_s, dropped_s=self.dropped_s, onsets=self._onsets,
                                  tempo=self._tempo))

    def _finish(self, reason: str) -> None:
        if self.state is State.ENDED:
            return
        self.state = State.ENDED
        self.end_reason = reason
        if self._links.link is not None:
            self._links.link.release(self.stream_id)
        summary = StreamSummary(self.received_s, self._onsets, reason, self.dropped_s)
        ended = msg.ended(self.stream_id, reason, summary.duration_s, summary.onsets)
        self._links.hub.end(self.stream_id, ended)
        self._links.on_end(self)
        if not self._finished.done():
            self._finished.set_result(summary)
        # An ended session emits nothing more: it lets go of its transport (which holds it), so that the two
        # are freed by reference counting once the connection closes, not by the garbage collector's next
        # full pass (which came seconds to minutes later, with each stream's ring, state and socket).
        self._consumers = ()
        self._sink = DETACHED
