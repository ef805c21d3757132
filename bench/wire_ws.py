"""A lean WebSocket client for load generation: RFC 6455 framing over a plain asyncio protocol.

A load generator that plays hundreds of publishers in one process spends most of its CPU time in its
WebSocket client, on the same 2-core machine as the server it measures. This client does the least a
client must: it opens the connection with the HTTP upgrade, masks what it sends (a frame to send over
and over, such as one chunk of a click track, is masked once, with its own random key, by
:func:`masked_frame`), answers pings, and hands each text message to a callback together with the
``time.perf_counter()`` at which the bytes holding it were read off the socket. It does not fragment,
compress or accept fragmented messages, which the server does not send.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import cast

import numpy as np

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
CONNECT_TIMEOUT_S = 30.0  # for the upgrade to be answered
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame of ``opcode`` carrying ``payload``, masked with a fresh random key."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    data = np.frombuffer(payload, dtype=np.uint8)
    keys = np.resize(np.frombuffer(key, dtype=np.uint8), size)
    return header + key + (data ^ keys).tobytes()


class WireSocket(asyncio.Protocol):
    """One client connection. ``on_text(text, received_at)`` gets every text message, in order."""

    def __init__(self, host: str, port: int, path: str, on_text: Callable[[str, float], None]) -> None:
        self._request_key = base64.b64encode(os.urandom(16))
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Key: {self._request_key.decode()}\r\n\r\n").encode()
        self._on_text = on_text
        self._buffer = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()  # the server's close code

    @classmethod
    async def connect(cls, host: str, port: int, path: str,
                      on_text: Callable[[str, float], None]) -> WireSocket:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(host, port, path, on_text), host, port)
        await asyncio.wait_for(protocol.opened, CONNECT_TIMEOUT_S)
        return protocol

    def send(self, frame: bytes) -> None:
        """Write an already framed (and masked) message."""
        assert self.transport is not None
        self.transport.write(frame)

    def send_text(self, text: str) -> None:
        self.send(masked_frame(TEXT, text.encode()))

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(CLOSE, code.to_bytes(2, "big")))
            self.transport.close()

    # --- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCP transport subclasses none
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        received_at = time.perf_counter()
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._upgrade(buffer):
            return
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size, start = second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if second & 0x80 or not first & 0x80:
                self._fail(f"a masked or fragmented frame from the server (bytes {first:#x} {second:#x})")
                return
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start:start + size])
            del buffer[:start + size]
            self._frame(first & 0x0F, payload, received_at)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- internals -------------------------------------------------------------------------------------

    def _upgrade(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[:end + 4]
        accept = base64.b64encode(hashlib.sha1(self._request_key + GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            self._fail(f"the upgrade was refused: {head.splitlines()[0] if head else head!r}")
            return False
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _frame(self, opcode: int, payload: bytes, received_at: float) -> None:
        if opcode == TEXT:
            self._on_text(payload.decode(), received_at)
        elif opcode == PING:
            self.send(masked_frame(PONG, payload))
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if not self.closed.done():
                self.closed.set_result(code)
            self.close(code or 1000)

    def _fail(self, reason: str) -> None:
        error = ConnectionError(reason)
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()
