"""What the live-stream WebSockets share: the configured socket, an outgoing queue, HTTP errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from aiohttp import WSMessage, web
from aiohttp._websocket.reader import WebSocketReader
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

from server.config import Config
from server.protocol import codec as codec_mod
from server.protocol.codec import Codec
from server.protocol.errors import CloseCode, ProtocolError, json_error
from server.protocol.stream_messages import Event
from server.transport import lingering_close
from server.transport.audio_tap import AudioHandler, AudioTap
from server.transport.ws_masking import require_masked_frames

CLOSE_DRAIN_TIMEOUT_S = 10.0  # how long a closing socket may take to deliver what is queued


def check_upgrade(request: web.Request) -> tuple[Codec, None] | tuple[None, web.Response]:
    """The codec of a WebSocket request, or the HTTP error to answer instead of upgrading."""
    try:
        codec = Codec.from_query(request.query.get("codec"))
    except ProtocolError as exc:
        return None, json_error(400, exc.code, exc.message)
    if not web.WebSocketResponse().can_prepare(request).ok:
        return None, json_error(426, "websocket_required",
                                "this endpoint is a WebSocket; send an upgrade request")
    return codec, None


async def open_socket(request: web.Request, config: Config,
                      receive_limit_bytes: int | None = None) -> StreamSocket | web.Response:
    """The prepared :class:`StreamSocket` of a WebSocket request, or the HTTP error to answer instead."""
    codec, refusal = check_upgrade(request)
    if codec is None:
        assert refusal is not None
        return refusal
    ws = StreamSocket(config, codec, receive_limit_bytes)
    await ws.prepare(request)
    return ws


class StreamSocket(web.WebSocketResponse):
    """A server WebSocket configured from :class:`Config`, explaining a too-big message before closing.

    aiohttp closes with 1009 when a message exceeds ``max_msg_size``; this socket first sends an ``error``
    message (code ``message_too_big``) naming the limit, and puts the reason in the close frame.

    aiohttp refuses such a message from its header, while the client is still sending its payload, and then
    closes the TCP connection at once: the kernel resets it and the client loses the error and the close
    frame (it sees 1006). So after the close frame the connection lingers (:mod:`lingering_close`) until the
    client has stopped sending.
    """

    def __init__(self, config: Config, codec: Codec, receive_limit_bytes: int | None = None) -> None:
        limit = config.max_message_bytes if receive_limit_bytes is None else receive_limit_bytes
        # aiohttp refuses a message whose length is >= max_msg_size; +1 admits exactly `limit` bytes.
        super().__init__(max_msg_size=limit + 1, heartbeat=config.heartbeat_s or None, compress=False)
        self.codec = codec
        self.limit_bytes = limit
        self._transport: asyncio.Transport | None = None
        self._linger = False
        self._drain: lingering_close.Drain | None = None
        self._heard_s = 0.0  # loop time of the latest read from the peer (for the heartbeat)
        self._pinged_s = 0.0  # loop time of the latest heartbeat that was due (a ping went out)
        self._clock: Callable[[], float] = time.monotonic  # the loop's clock, once prepared

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter:
        self._transport = cast(asyncio.Transport | None, request.transport)  # uvloop's is no subclass
        return await super().prepare(request)

    async def receive_within(self, timeout_s: float) -> WSMessage:
        """The next message within ``timeout_s`` in all (0: no limit), else :class:`TimeoutError`.

        ``receive(timeout=...)`` restarts its clock at each pong it handles, so a client that answers the
        heartbeat's pings but sends nothing was never idle. A pong proves the peer alive, not working.
        """
        if not timeout_s:
            return await self.receive()
        async with asyncio.timeout(timeout_s):
            return await self.receive()

    def detach(self) -> None:
        """The handler is done with this socket: its connection's protocol no longer calls back into it on
        each read. That callback (the heartbeat's, as aiohttp's own) closed a reference cycle (protocol ->
        socket -> request -> protocol) that kept the socket, its request and its reader alive after the
        connection closed, until the garbage collector's next full pass."""
        request = self._req
        protocol = request.protocol if request is not None else None
        if protocol is not None:
            protocol._data_received_cb = None

    def set_tap(self, tap: AudioHandler | None) -> None:
        """Hand binary messages to ``tap`` as they arrive, not through ``receive()`` (:mod:`audio_tap`)."""
        assert isinstance(self._reader, AudioTap)
        self._reader.tap = tap

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        """aiohttp's last step of ``prepare()`` (3.14), which gives the connection its frame reader, with
        the message queue an :class:`AudioTap`; an unmasked client frame is refused in front of the reader
        (close 1002, :mod:`ws_masking`)."""
        seen = bytes(request.protocol._message_tail)  # fed to the reader at once, with the handshake
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        self._reader = AudioTap(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
        self._parser = WebSocketReader(self._reader, self._max_msg_size, compress=bool(self._compress),
                                       decode_text=self._decode_text)
        self._clock = loop.time
        self._heard_s = loop.time()
        request.protocol.set_parser(self._parser, data_received_cb=None if self._heartbeat is None
                                    else self._heard)
        request.protocol.keep_alive(False)  # a WebSocket connection carries no further HTTP request
        require_masked_frames(request.protocol, self._reader, seen)

    # --- Heartbeat ----------------------------------------------------------------------------------------
    # aiohttp re-arms the heartbeat from every read (a loop callback and four calls each time: for a stream of
    # 20 ms chunks, per chunk). Here a read only notes its time; the heartbeat timer, when it fires, pings
    # only if the peer was not heard for a whole interval, else waits until it will have been. Same rule:
    # a ping after ``heartbeat_s`` without a read, the connection dropped if nothing is read within half of
    # it after the ping.

    def _heard(self) -> None:
        """aiohttp's callback for each read from the peer."""
        self._heard_s = self._clock()

    def _send_heartbeat(self) -> None:
        heartbeat_s, loop = self._heartbeat, self._loop
        if heartbeat_s is None or loop is None:
            return
        due_s = self._heard_s + heartbeat_s
        if due_s > loop.time():  # heard within the interval: not due yet
            self._heartbeat_cb = loop.call_at(due_s, self._send_heartbeat)
            return
        self._pinged_s = loop.time()
        self._heartbeat_when = 0.0  # aiohttp's own "not yet" (it re-arms from each read; not here)
        super()._send_heartbeat()

    def _pong_not_received(self) -> None:
        heartbeat_s, loop = self._heartbeat, self._loop
        if heartbeat_s is not None and loop is not None and self._heard_s >= self._pinged_s:
            self._pong_response_cb = None  # heard since the ping: alive; the next ping when due
            if self._heartbeat_cb is None:
                self._heartbeat_cb = loop.call_at(self._heard_s + heartbeat_s, self._send_heartbeat)
            return
        super()._pong_not_received()

    async def close(self, *, code: int = CloseCode.NORMAL, message: bytes = b"", drain: bool = True) -> bool:
        if not (code == CloseCode.TOO_BIG and not message and not self.closed):
            return await super().close(code=code, message=message, drain=drain)
        # aiohttp's reader refused a message (its only close with 1009 and no reason).
        error = ProtocolError("message_too_big", f"a message was larger than {self.limit_bytes} bytes, "
                              "the most this server accepts", CloseCode.TOO_BIG)
        with contextlib.suppress(Exception):
            await codec_mod.send(self, self.codec, error.to_message())
        self._linger = True
        try:
            return await super().close(code=code, message=b"message_too_big", drain=drain)
        finally:
            self._linger = False
            try:
                if self._drain is not None:
                    await self._drain.wait()
            finally:
                super()._close_transport()
                self._close_code = CloseCode.TOO_BIG  # what the client was sent (aiohttp noted 1006)

    def _close_transport(self) -> None:
        """aiohttp's last step of ``close()`` (3.14). While lingering, discard what arrives instead."""
        transport = self._transport
        if self._linger and transport is not None and not transport.is_closing() and self._drain is None:
            self._drain = lingering_close.start(transport)
            return
        super()._close_transport()


class Outbox:
    """Messages waiting to go out on one socket, sent in order by :meth:`run`.

    :meth:`put` never blocks. It refuses (returns ``False``) when ``limit`` messages are already waiting,
    unless ``force`` is given, so a client that stops reading cannot grow the server's memory.
    """

    def __init__(self, ws: web.WebSocketResponse, codec: Codec, limit: int) -> None:
        self._ws = ws
        self._codec = codec
        self.limit = limit
        self._queue: deque[Event] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.broken = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: Event, force: bool = False) -> bool:
        if self._closing or self.broken:
            return True
        if len(self._queue) >= self.limit and not force:
            return False
        self._queue.append(message)
        self._idle.clear()
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def run(self) -> None:
        """Send queued messages until :meth:`close` (after which the queue is still emptied)."""
        queue, ws, codec = self._queue, self._ws, self._codec
        try:
            while True:
                while queue:
                    message = queue.popleft()
                    try:
                        await codec_mod.send(ws, codec, message)
                    except (ConnectionError, RuntimeError):
                        self.broken = True
                        queue.clear()
                        return
                self._idle.set()
                if self._closing:
                    return
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
        finally:
            self._idle.set()

    async def flush(self, timeout_s: float = CLOSE_DRAIN_TIMEOUT_S) -> None:
        """Wait until everything queued so far was handed to the socket (or ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    def close(self) -> None:
        self._closing = True
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
