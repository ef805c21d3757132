"""One WebRTC publisher: its peer connection, the stream session its audio track drives, and their end.

The peer is the session's :class:`~server.stream.session.StreamSink`: events go out on the ``events``
data channel. Every way a peer ends runs :meth:`WebRtcPeer.end` exactly once:

- ``stop`` on the channel: analyse everything received, send the remaining onsets and ``stopped``;
- a fatal error (idle timeout, slow reader, connection not established in time, ...): send ``error``
  (``fatal: true``), then analyse and send the rest as for ``stop``;
- the client hung up (connection ``closed`` or ``failed``, track ended): analyse the rest for the
  stream's subscribers;

then close the data channel once the client has everything, close the peer connection, wait for the
track consumer to finish, and leave the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from server.protocol import stream_messages as msg
from server.protocol.errors import CloseCode, ProtocolError
from server.protocol.stream_messages import Event
from server.stream import control
from server.stream.session import State, StreamSession
from server.webrtc import jitter
from server.webrtc.channel import EVENTS_LABEL, EventChannel, parse_channel_message
from server.webrtc.consumer import FrameConverter, consume_track

log = logging.getLogger(__name__)

SESSION_RATE_HZ = 48000  # every WebRTC stream is analysed as mono float32 at this rate
CHANNEL_CLOSE_TIMEOUT_S = 5.0  # how long the client may take to acknowledge the channel's last messages
STOP_TIMEOUT_S = 60.0  # how long the analysis of what was received may take before it is abandoned


class WebRtcPeer:
    """A peer connection from one client and, once negotiated, its live-stream session."""

    def __init__(self, pc: RTCPeerConnection, *, connect_timeout_s: float, max_lag_s: float,
                 on_closed: Callable[[WebRtcPeer], None], jitter_buffer: str = "immediate") -> None:
        self.pc = pc
        self.jitter_buffer = jitter_buffer
        self.connect_timeout_s = connect_timeout_s
        self.max_lag_s = max_lag_s
        self._on_closed = on_closed
        self.session: StreamSession | None = None
        self.events = EventChannel()
        self.converter = FrameConverter(SESSION_RATE_HZ, on_jump=self._on_clock_jump)
        self.track: MediaStreamTrack | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None
        self._closing = False
        self.closed = asyncio.get_running_loop().create_future()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    @property
    def stream_id(self) -> str:
        return self.session.stream_id if self.session is not None else ""

    # --- Negotiation -------------------------------------------------------------------------------------

    async def apply_offer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the client's offer and create the answer; raises whatever aiortc raises for an offer it
        cannot use."""
        await self.pc.setRemoteDescription(offer)
        if self.jitter_buffer == "immediate":
            for transceiver in self.pc.getTransceivers():
                jitter.install(transceiver.receiver, transceiver.kind)
        return await self.pc.createAnswer()

    async def make_answer(self, answer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply ``answer`` locally: gathers the ICE candidates (host ones, plus the configured STUN/TURN
        servers') and returns the answer with them."""
        await self.pc.setLocalDescription(answer)
        description = self.pc.localDescription
        assert description is not None
        return description

    def start(self, session: StreamSession) -> None:
        """Drive ``session`` with the negotiated track; watch for a connection that never comes up."""
        self.session = session
        if self.track is not None:
            self._consume(self.track, session)
        self._watchdog = asyncio.create_task(self._watch_connect(), name=f"webrtc-connect-{self.stream_id}")

    def _consume(self, track: MediaStreamTrack, session: StreamSession | None) -> None:
        task = asyncio.create_task(self._read(track, session), name=f"webrtc-track-{self.stream_id}")
        self._consumers.append(task)

    async def _read(self, track: MediaStreamTrack, session: StreamSession | None) -> None:
        try:
            if session is None:  # a track the stream does not use is still read to its end
                with contextlib.suppress(Exception):
                    while True:
                        await track.recv()
            else:
                await consume_track(track, session, self.converter, max_lag_s=self.max_lag_s)
                self.end(reason="disconnected")  # the track ended: the client hung up
        except Exception:  # a failure here must not leave the connection open
            log.exception("reading the audio track of stream %s failed", self.stream_id)
            self.fault(ProtocolError("server_fault", "the server failed to read the audio track",
                                     CloseCode.SERVER_FAULT))

    def _on_clock_jump(self, at_s: float, jump_s: float) -> None:
        self.deliver(msg.warning(
            self.stream_id, "clock_jump", f"the track's RTP clock jumped {jump_s:.3f} s ahead; onset times "
            "after this point run that much behind it", at_s=round(at_s, 6), jump_s=round(jump_s, 6)))

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if self.pc.connectionState != "connected" and self.session is not None:
            self.session.fault(ProtocolError(
                "connect_timeout", "the peer connection was not established within "
                f"{self.connect_timeout_s:g} s of the offer", CloseCode.POLICY))

    # --- aiortc events -----------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.track is None:
            self.track = track
            if self.session is not None:
                self._consume(track, self.session)
        else:
            self._consume(track, None)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_LABEL or self.events.channel is not None:
            channel.close()  # only one channel, labelled "events", is served
            return
        self.events.attach(channel)
        channel.on("message", self._on_message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._watchdog is not None:
            self._watchdog.cancel()
        elif state in ("failed", "closed"):
            self.end(reason="disconnected" if state == "closed" else "connection_failed")

    def _on_message(self, data: str | bytes) -> None:
        session = self.session
        if session is None or self._ending is not None:
            return
        session.touch()
        try:
            control.handle(session, parse_channel_message(data), self)
        except ProtocolError as exc:
            self.events.send(exc.to_message(), force=True)

    # --- Controlled --------------------------------------------------------------------------------------

    def reply(self, message: Event) -> None:
        self.events.send(message, force=True)

    def stop(self) -> None:
        self.end(reason="stopped", reply_stopped=True)

    # --- StreamSink --------------------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if not self.events.send(event) and self.session is not None:
            self.session.fault(ProtocolError(
                "slow_reader", f"more than {self.events.max_buffered_bytes} bytes wait on the events "
                "channel: the client does not read it", CloseCode.POLICY))

    def fault(self, error: ProtocolError) -> None:
        self.end(error=error, reason=error.code)

    # --- The end -----------------------------------------------------------------------------------------

    def end(self, *, reason: str, error: ProtocolError | None = None, reply_stopped: bool = False) -> None:
        """Start ending the peer (once; later calls do nothing). :attr:`closed` resolves when done."""
        if self._ending is None and not self._closing:
            self._ending = asyncio.create_task(self._end(reason, error, reply_stopped),
                                               name=f"webrtc-end-{self.stream_id}")

    async def _end(self, reason: str, error: ProtocolError | None, reply_stopped: bool) -> None:
        try:
            if error is not None:
                self.events.send({**error.to_message(), "fatal": True}, force=True)
            await self._finish_session(reason, reply_stopped)
            await self.events.close(CHANNEL_CLOSE_TIMEOUT_S)
        finally:
            await self.close()

    async def _finish_session(self, reason: str, reply_stopped: bool) -> None:
        session = self.session
        if session is None or session.state is State.ENDED:
            return
        try:
            summary = await asyncio.wait_for(session.stop(reason), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("stream %s: analysis of the remaining audio timed out; abandoned", self.stream_id)
            session.abandon("stop_timeout")
            return
        if reply_stopped:
            self.events.send(msg.stopped(summary.duration_s, summary.onsets, summary.dropped_s), force=True)

    async def close(self, reason: str = "closed") -> None:
        """Close the peer connection at once and release everything; a session still running is abandoned
        with ``reason``. Safe to call more than once."""
        if self._closing:
            await asyncio.shield(self.closed)
            return
        self._closing = True
        try:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self.session is not None and self.session.state is not State.ENDED:
                self.session.abandon(reason)
            await self.pc.close()
            # A closed connection delivers nothing more, and a track whose receiver never started (no
            # connection yet) would never end by itself: stop reading now.
            current = asyncio.current_task()
            consumers = [task for task in self._consumers if task is not current and not task.done()]
            for task in consumers:
                task.cancel()
            if consumers:
                await asyncio.wait(consumers)
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
                self._on_closed(self)
