"""A WebSocket message over the size limit always ends with the documented ``message_too_big`` error and
close 1009 as the client sees it, on every endpoint that reads messages, even while the client is still
sending the refused payload (the server must not reset the connection under it)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartServer
from tests.stream_client import Publisher

LIMIT_BYTES = 64 * 1024  # the server's max_message_bytes here, and the fixed limit of subscriber sockets
OVERSIZED_BYTES = 4 << 20  # far more than the kernel buffers take at once: still being sent when refused
ATTEMPTS = 20


async def refuse_oversized(http: aiohttp.ClientSession, server: TestServer, path: str,
                           first: dict[str, Any] | None) -> tuple[list[dict[str, Any]], int | None]:
    """On a fresh socket: send ``first`` (and read its reply), then an oversized frame; every message the
    server sends after it, and the close code."""
    ws = await http.ws_connect(server.make_url(path))
    try:
        if first is not None:
            await ws.send_str(json.dumps(first))
        reply = await ws.receive(timeout=30)
        assert reply.type == aiohttp.WSMsgType.TEXT, reply
        await ws.send_bytes(b"\x00" * OVERSIZED_BYTES)  # a reset under this send raises here
        after: list[dict[str, Any]] = []
        while True:
            message = await ws.receive(timeout=30)
            if message.type != aiohttp.WSMsgType.TEXT:
                return after, ws.close_code
            after.append(json.loads(message.data))
    finally:
        await ws.close()


@pytest.mark.parametrize("endpoint", ["stream", "events", "upload"])
async def test_an_oversized_message_always_ends_with_its_error_and_1009(
        start_server: StartServer, http: aiohttp.ClientSession, endpoint: str) -> None:
    server = await start_server(max_message_bytes=LIMIT_BYTES, rate_limit_per_s=0.0)
    publisher: Publisher | None = None
    first: dict[str, Any] | None
    if endpoint == "stream":
        path, first = "/api/v3/stream", {"type": "start", "sample_rate": 16000, "channels": 1,
                                         "encoding": "pcm_f32le"}
    elif endpoint == "upload":
        path, first = "/api/v3/upload", {"type": "upload", "size": 10 * OVERSIZED_BYTES}
    else:
        publisher = await Publisher.open(http, server)
        started = await publisher.start(16000)
        path, first = f"/api/v3/streams/{started['stream_id']}/events", None  # replies `subscribed`
    outcomes = [await refuse_oversized(http, server, path, first) for _ in range(ATTEMPTS)]
    for after, code in outcomes:
        assert code == 1009, outcomes
        assert [m["code"] for m in after if m["type"] == "error"] == ["message_too_big"], after
        assert f"{LIMIT_BYTES} bytes" in after[-1]["message"]
    if publisher is not None:  # the stream being watched was not disturbed
        await publisher.send({"type": "stop"})
        assert (await publisher.receive_all())[-1]["code"] == 1000


async def test_a_client_that_ignores_the_close_frame_still_gets_it_and_then_eof(
        start_server: StartServer) -> None:
    """A raw client that sends its oversized frame to the end and never answers the close frame gets the
    error and the close frame, then an orderly end of the connection once it has gone quiet (no reset)."""
    server = await start_server(max_message_bytes=LIMIT_BYTES, rate_limit_per_s=0.0)
    assert server.host is not None and server.port is not None
    received = await asyncio.to_thread(send_oversized_raw, server.host, server.port)
    frames = server_frames(received[received.index(b"\r\n\r\n") + 4:])
    assert [opcode for opcode, _ in frames] == [0x1, 0x8], frames  # the error (text), then the close
    assert json.loads(frames[0][1])["code"] == "message_too_big"
    assert frames[1][1] == (1009).to_bytes(2, "big") + b"message_too_big"


def send_oversized_raw(host: str, port: int) -> bytes:
    """Everything the server sends on a raw socket that upgrades, then sends one 2 MiB binary frame."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"GET /api/v3/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 101"), received
        # One binary frame of 2 MiB, masked with a zero key (the payload goes as is).
        header = bytes([0x82, 0x80 | 127]) + (2 << 20).to_bytes(8, "big") + b"\x00" * 4
        sock.sendall(header + b"\x00" * (2 << 20))  # a reset under this send raises here
        while chunk := sock.recv(65536):  # until EOF; a reset raises ConnectionResetError
            received += chunk
    return received


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame a server sent, in order."""
    frames = []
    while data:
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[start:start + length]))
        data = data[start + length:]
    return frames
