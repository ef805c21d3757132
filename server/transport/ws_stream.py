"""``GET /api/v3/stream``: a publisher streams audio in and gets its onsets back on the same WebSocket.

The connection is a :class:`~server.stream.session.StreamSink`: its session delivers events here and
they go out through an :class:`Outbox`, so the receive loop never waits on sending and the socket is
always read. See docs/protocol.md, "Live streams".
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from server import appkeys
from server.protocol import stream_messages as msg
from server.protocol.codec import Audio, Codec, decode_frame
from server.protocol.errors import CloseCode, ProtocolError
from server.protocol.stream_messages import Event, Start, parse_client_message
from server.stream import control
from server.stream.service import StreamService
from server.stream.session import State, StreamSession
from server.transport.audio_decode import AudioDecoder, DecodeScratch
from server.transport.stream_socket import Outbox, StreamSocket, open_socket

log = logging.getLogger(__name__)

PUBLISHER_QUEUE_MIN = 1024  # events waiting for a publisher that does not read before it is cut off
DATA_TYPES = (WSMsgType.BINARY, WSMsgType.TEXT)
CLIP_WARNING_INTERVAL_S = 1.0  # least time between two `samples_clipped` warnings of one stream


class Publisher:
    """One publishing WebSocket and, once started, its stream session."""

    def __init__(self, ws: StreamSocket, codec: Codec, service: StreamService, client: str,
                 scratch: DecodeScratch | None = None) -> None:
        self.ws = ws
        self.codec = codec
        self.service = service
        self.client = client
        self.outbox = Outbox(ws, codec, max(PUBLISHER_QUEUE_MIN, 4 * service.config.subscriber_queue))
        self.session: StreamSession | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None
        self.clipped_samples = 0  # float samples beyond [-1, 1], clipped to it
        self._clip_warned_s = -CLIP_WARNING_INTERVAL_S
        self._decode: AudioDecoder | None = None  # the session's, once it has started
        self._scratch = scratch  # shared by the decoders of every publisher

    # --- StreamSink --------------------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if not self.outbox.put(event) and self.session is not None:
            self.session.fault(ProtocolError(
                "slow_reader", f"more than {self.outbox.limit} events are waiting: the client does not read "
                "its socket", CloseCode.POLICY))

    def fault(self, error: ProtocolError) -> None:
        self._end(error)

    # --- Controlled --------------------------------------------------------------------------------------

    def reply(self, message: Event) -> None:
        self.outbox.put(message, force=True)

    def stop(self) -> None:
        self._end(None)

    # --- Connection --------------------------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.create_task(self.outbox.run())
        receiver = self._receiver = asyncio.create_task(self._converse())
        try:
            await asyncio.wait((receiver,))
            self._fault_if_raised(receiver)
            session = self.session
            if self._ending is None and session is not None and session.state is not State.ENDED:
                await session.stop("disconnected")
            if self._ending is not None:
                await self._ending
            self.outbox.close()
            await sender
        finally:  # also when aiohttp cancels the handler because the client went away
            receiver.cancel()
            sender.cancel()
            if self.session is not None:
                self.session.request_stop("disconnected")  # finishes in the background if still running
            # The socket's reader no longer calls back into this publisher: without this reference cycle
            # (publisher -> socket -> reader -> tap -> publisher) the connection's objects are freed as soon
            # as aiohttp lets go of them, not at the garbage collector's next full pass.
            if self.codec is Codec.JSON:
                self.ws.set_tap(None)

    def _fault_if_raised(self, receiver: asyncio.Task[None]) -> None:
        """A receive loop that raised unexpectedly is a server fault: logged with its traceback, and the
        stream ends as for any fatal error (the accepted audio analysed and sent), with ``internal`` and
        close 1011. A connection lost under it is only the client going away."""
        if receiver.cancelled() or self._ending is not None:
            return
        exc = receiver.exception()
        if exc is None or isinstance(exc, ConnectionError):
            return
        stream_id = self.session.stream_id if self.session is not None else "(not started)"
        log.error("live stream %s: unexpected error", stream_id, exc_info=exc)
        self._end(ProtocolError("internal", "a server fault (logged with its traceback)",
                                CloseCode.SERVER_FAULT))

    async def _converse(self) -> None:
        if await self._start():
            await self._receive()

    def _end(self, error: ProtocolError | None) -> None:
        """Start ending the connection, once: with ``error`` (fatal) or, for ``None``, as the client's
        ``stop`` asked. The receive loop returns once this has been called."""
        if self._ending is None:
            self._ending = asyncio.create_task(self._close(error))

    async def _close(self, error: ProtocolError | None) -> None:
        """The one way a publisher's connection ends: report ``error`` if any, analyse and send what was
        accepted (then ``stopped`` when the client asked to stop), and close with the error's code or 1000."""
        receiver = self._receiver
        if receiver is not None:
            # Stop reading first: aiohttp drops the TCP connection without a closing handshake when
            # close() runs while another task is inside receive().
            receiver.cancel()
            await asyncio.wait((receiver,))
        if error is not None:
            self.outbox.put(error.to_message(), force=True)
        if self.session is not None:
            summary = await self.session.stop()
            if error is None:
                stopped = msg.stopped(summary.duration_s, summary.onsets, summary.dropped_s)
                self.outbox.put(stopped, force=True)
        self.outbox.close()
        await self.outbox.flush()
        if error is None:
            await self.ws.close(code=CloseCode.NORMAL)
        else:
            await self.ws.close(code=error.close_code or CloseCode.POLICY, message=error.code.encode())

    async def _start(self) -> bool:
        """Wait for ``start`` and open the session; ``False`` if the connection ended instead."""
        idle_timeout_s = self.service.config.idle_timeout_s
        try:
            message = await self.ws.receive_within(idle_timeout_s)
        except TimeoutError:
            self._end(ProtocolError("idle_timeout", f"no start message within {idle_timeout_s:g} s",
                                    CloseCode.POLICY))
            return False
        if message.type not in DATA_TYPES:
            return False
        try:
            frame = decode_frame(self.codec, message.type, message.data)
            parsed = None if isinstance(frame, Audio) else parse_client_message(frame)
            if not isinstance(parsed, Start):
                raise ProtocolError("not_started", "the first message must be 'start'", CloseCode.POLICY)
            session = self.service.open(parsed.format, parsed.settings, self, client=self.client,
                                        transport="websocket")
        except ProtocolError as exc:
            if not exc.fatal:
                exc = ProtocolError(exc.code, exc.message, CloseCode.POLICY)
            self._end(exc)
            return False
        self.session = session
        self._decode = AudioDecoder(session.format, self._scratch)
        self.outbox.put(msg.started(session.stream_id, session.format, session.settings.to_dict(),
                                    session.latency_s, session.hop_s, self.service.limits()))
        return True

    async def _receive(self) -> None:
        session = self.session
        assert session is not None
        ws, codec = self.ws, self.codec
        binary, raw_audio = WSMsgType.BINARY, codec is Codec.JSON  # with JSON a binary frame is raw PCM
        if raw_audio:  # audio chunks go into the ring from the socket's reader, without waking this task
            ws.set_tap(self._tapped)
        while self._ending is None:
            message = await ws.receive()
            kind = message.type
            try:
                if kind is binary and raw_audio:  # the hot path: one audio chunk, straight into the ring
                    self._audio(session, message.data)
                    continue
                if kind not in DATA_TYPES:
                    return
                frame = decode_frame(codec, kind, message.data)
                if isinstance(frame, Audio):
                    self._audio(session, frame.data)
                    continue
                session.touch()
                control.handle(session, parse_client_message(frame), self)
            except ProtocolError as exc:
                if exc.fatal:
                    self.fault(exc)
                    return
                self.outbox.put(exc.to_message(), force=True)

    def _tapped(self, data: bytes) -> bool:
        """A binary message handed over by the socket's reader (:mod:`~server.transport.audio_tap`): audio,
        taken as :meth:`_receive` takes it. ``False`` (queue it for :meth:`_receive`) once the connection
        is ending, or if it fails unexpectedly (:meth:`_receive` then meets the same failure)."""
        session = self.session
        if self._ending is not None or session is None:
            return False
        try:
            self._audio(session, data)
        except ProtocolError as exc:
            if exc.fatal:
                self.fault(exc)
            else:
                self.outbox.put(exc.to_message(), force=True)
        except Exception:
            log.exception("audio from the socket's reader failed; it goes through receive() from now on")
            return False
        return True

    def _audio(self, session: StreamSession, data: bytes) -> None:
        """One chunk of audio into the session's ring, clipped to full scale (counted and warned about)."""
        decode = self._decode
        assert decode is not None  # made with the session
        samples, clipped = decode(data)
        session.feed(samples)
        if clipped:
            self._clipped(session, clipped)

    def _clipped(self, session: StreamSession, clipped: int) -> None:
        """Count clipped samples; warn the publisher at most once per :data:`CLIP_WARNING_INTERVAL_S`."""
        self.clipped_samples += clipped
        now_s = asyncio.get_running_loop().time()
        if now_s - self._clip_warned_s >= CLIP_WARNING_INTERVAL_S:
            self._clip_warned_s = now_s
            self.outbox.put(msg.warning(
                session.stream_id, "samples_clipped", f"samples beyond [-1, 1] were clipped to it "
                f"({self.clipped_samples} in this stream so far)", clipped_samples=self.clipped_samples),
                force=True)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    service = request.app[appkeys.STREAMS]
    ws = await open_socket(request, service.config)
    if not isinstance(ws, StreamSocket):
        return ws  # the HTTP refusal
    scratch = request.app[appkeys.DECODE_SCRATCH]
    try:
        await Publisher(ws, ws.codec, service, request.remote or "", scratch).run()
    finally:
        ws.detach()
    return ws


async def _on_shutdown(app: web.Application) -> None:
    """Shutdown begins: end each WebSocket stream while its socket is open (aiohttp waits for running
    handlers before the cleanup contexts run, so otherwise clients hang until its timeout, then see 1006).
    The publisher gets ``error`` ``shutdown`` and close 1001 once the audio it sent is analysed."""
    error = ProtocolError("shutdown", "the server is shutting down", CloseCode.GOING_AWAY)
    for session in list(app[appkeys.STREAMS].registry):
        if session.transport == "websocket":
            session.fault(error)


def setup(app: web.Application) -> None:
    """Route ``/api/v3/stream`` to the stream service (:data:`~server.appkeys.STREAMS`, built in app.py)."""
    app[appkeys.DECODE_SCRATCH] = DecodeScratch()
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/api/v3/stream", stream_handler)
