"""Publishing a live stream: ``start``, audio, ``configure``, ``stop``, and the events that come back.

A background reader takes every message off the socket as it arrives, so sending never waits on reading:
replies to :meth:`Publisher.configure` and :meth:`Publisher.stop` resolve their calls, and every message
(onsets, status, warnings, replies, non-fatal errors) is also queued for :meth:`Publisher.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import numpy as np

from server.client.errors import ClientError
from server.client.wire import Message, MessageSocket, to_pcm
from server.protocol.encoding import Encoding

STREAM_PATH = "/api/v3/stream"
REPLY_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 10.0  # flow control: longest wait for an ack before sending anyway (the server may then drop)
WINDOW_SHARE = 0.5  # flow control: at most this share of the server's max_buffer_s is sent ahead of analysis
MAX_QUEUED_EVENTS = 10_000  # events kept for a caller that does not read them; the oldest go first


class Publisher:
    """One live stream being published. Use :meth:`open`, then send audio, then :meth:`stop`."""

    def __init__(self, socket: MessageSocket, started: Message, encoding: Encoding,
                 flow_control: bool = False) -> None:
        self.socket = socket
        self.started = started
        self.flow_control = flow_control
        limits = started.get("limits") or {}
        self.window_s = WINDOW_SHARE * float(limits.get("max_buffer_s", 1.0))
        self.sent_s = 0.0  # audio sent so far
        self._frame_bytes = int(started.get("channels", 1)) * encoding.bytes_per_sample
        self._sample_rate = int(started.get("sample_rate", 1))
        self._acked: Message = {"received_s": 0.0, "lag_s": 0.0}
        self._ack_arrived = asyncio.Event()
        self.stream_id: str = started["stream_id"]
        self.settings: dict[str, Any] = dict(started.get("settings", {}))
        self.encoding = encoding
        self.events_dropped = 0
        self.error: Message | None = None  # the last error message the server sent
        self.dropped_s = 0.0  # audio the server dropped so far (the latest ``status``/``stopped`` says)
        self._events: deque[Message | None] = deque()
        self._arrived = asyncio.Event()
        self._configuring: deque[asyncio.Future[Message]] = deque()
        self._stopped: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, base_url: str, *, sample_rate: int, channels: int = 1,
                   encoding: str = "pcm_f32le", settings: Mapping[str, Any] | None = None,
                   codec: str = "json", token: str | None = None, flow_control: bool = False) -> Publisher:
        """Connect (presenting ``token``, if any) and start a stream. The server's refusal raises
        :class:`ClientError`.

        ``flow_control``: opt into the server's ``ack`` messages and make :meth:`send_audio` wait while
        more than half the server's ``max_buffer_s`` is sent but not analysed, so nothing is dropped however
        fast the caller sends (for a recording; a live capture that cannot wait leaves it off)."""
        audio_encoding = Encoding(encoding)
        socket = await MessageSocket.connect(session, base_url, STREAM_PATH, codec, token=token)
        start: dict[str, Any] = {"type": "start", "sample_rate": sample_rate, "channels": channels,
                                 "encoding": audio_encoding.value}
        if settings is not None or flow_control:
            start["settings"] = {**dict(settings or {}), **({"ack": True} if flow_control else {})}
        try:
            await socket.send(start)
            reply = await socket.receive(REPLY_TIMEOUT_S)
        except BaseException:
            await socket.close()
            raise
        if reply is None or reply["type"] != "started":
            await socket.close()
            raise _refusal(reply, socket.close_code)
        return cls(socket, reply, audio_encoding, flow_control)

    # --- Sending ---------------------------------------------------------------------------------------

    async def send_audio(self, samples: np.ndarray | bytes) -> None:
        """Send audio: an array (converted to the stream's encoding) or raw interleaved PCM bytes."""
        if self.socket.closed:
            raise self._ended_error()
        data = to_pcm(samples, self.encoding)
        if self.flow_control:
            await self._wait_for_room()
        await self.socket.send_audio(data)
        self.sent_s += len(data) / self._frame_bytes / self._sample_rate

    def backlog_s(self) -> float:
        """Audio sent but not analysed yet, as far as the last ``ack`` tells: in transit plus waiting."""
        return max(0.0, self.sent_s - float(self._acked["received_s"])) + float(self._acked["lag_s"])

    async def _wait_for_room(self) -> None:
        while self.backlog_s() > self.window_s and not self.socket.closed:
            self._ack_arrived.clear()
            try:
                await asyncio.wait_for(self._ack_arrived.wait(), ACK_TIMEOUT_S)
            except TimeoutError:
                return  # no ack in time (an old server?): send anyway

    async def configure(self, settings: Mapping[str, Any],
                        timeout_s: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """Change settings from the next audio on; returns every effective setting.

        A rejected change raises :class:`ClientError` (``bad_settings``); the stream keeps its settings.
        """
        reply: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._configuring.append(reply)
        try:
            await self.socket.send({"type": "configure", "settings": dict(settings)})
            message = await asyncio.wait_for(asyncio.shield(reply), timeout_s)
        finally:
            with contextlib.suppress(ValueError):
                self._configuring.remove(reply)
        self.settings = dict(message["settings"])
        return self.settings

    async def stop(self, timeout_s: float = REPLY_TIMEOUT_S) -> Message:
        """Ask the server to analyse everything sent and end the stream; its ``stopped`` message.

        Onsets found in the last audio arrive (in :meth:`events`) before ``stopped``.
        """
        if not self._stopped.done() and not self.socket.closed:
            await self.socket.send({"type": "stop"})
        try:
            return await asyncio.wait_for(asyncio.shield(self._stopped), timeout_s)
        finally:
            await self._finish_reading(timeout_s)

    async def close(self) -> None:
        """Drop the connection without ``stop`` (the server still analyses what it received)."""
        await self.socket.close()
        await self._finish_reading(REPLY_TIMEOUT_S)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- Receiving -------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Message]:
        """Every message the server sends after ``started``, in order, until the socket closes."""
        while True:
            while not self._events:
                self._arrived.clear()
                await self._arrived.wait()
            event = self._events.popleft()
            if event is None:
                self._events.append(None)  # later iterations end at once too
                return
            yield event

    async def _read(self) -> None:
        try:
            while (message := await self.socket.receive()) is not None:
                self._dispatch(message)
        except (aiohttp.ClientError, ClientError, ConnectionError, TimeoutError) as exc:
            self.error = {"type": "error", "code": "connection", "message": str(exc)}
        finally:
            error = self._ended_error()
            for reply in [*self._configuring, self._stopped]:
                _fail(reply, error)
            self._queue(None)

    def _dispatch(self, message: Message) -> None:
        kind = message["type"]
        if kind == "configured" and self._configuring:
            self._resolve(self._configuring.popleft(), message)
        elif kind == "error":
            self.error = message
            if message.get("code") == "bad_settings" and self._configuring:
                error = ClientError(message["code"], str(message.get("message", "")))
                _fail(self._configuring.popleft(), error)
        elif kind == "ack":
            self._acked = message
            self.dropped_s = max(self.dropped_s, float(message.get("dropped_s", 0.0)))
            self._ack_arrived.set()
            return  # flow control only: not an event for the caller
        elif kind == "stopped":
            self.dropped_s = float(message.get("dropped_s", self.dropped_s))
            self._resolve(self._stopped, message)
        elif kind in ("status", "warning") and "dropped_s" in message:
            self.dropped_s = max(self.dropped_s, float(message["dropped_s"]))
        self._queue(message)

    @staticmethod
    def _resolve(reply: asyncio.Future[Message], message: Message) -> None:
        if not reply.done():
            reply.set_result(message)

    def _queue(self, message: Message | None) -> None:
        if message is not None and len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append(message)
        self._arrived.set()

    def _ended_error(self) -> ClientError:
        return _refusal(self.error, self.socket.close_code)

    async def _finish_reading(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        except TimeoutError:
            self._reader.cancel()
            await self.socket.close()


def _fail(reply: asyncio.Future[Message], error: ClientError) -> None:
    if not reply.done():
        reply.set_exception(error)
        reply.exception()  # marked retrieved: nobody may be waiting (a caller that is still gets it)


def _refusal(message: Message | None, close_code: int | None) -> ClientError:
    """The error to raise when a stream ended or was refused: the server's own, if it sent one."""
    if message is not None and message.get("type") == "error":
        return ClientError(str(message.get("code")), str(message.get("message", "")), close_code=close_code)
    return ClientError("closed", f"the connection closed (code {close_code})", close_code=close_code)
