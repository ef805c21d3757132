"""``Expect: 100-continue`` is answered only after the access checks: a client without a valid token (or
over its rate) gets 401/403/429 from the headers instead of ``100 Continue``, and never sends its body;
a client with one is invited, sends its body, and gets its answer. Raw sockets, a real server."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from testkit import signals
from tests.conftest import StartServer

TOKENS = "files:files-secret-1:analyse;rig:rig-secret-22:publish"
FILES, RIG = "files-secret-1", "rig-secret-22"
BOUNDARY = "tr4nsient"


def multipart_wav() -> bytes:
    """A multipart body with one short WAV file in the field ``file``."""
    signal = signals.clicks(sr=16000, duration_s=1.0)
    buffer = io.BytesIO()
    sf.write(buffer, signal.samples, signal.sample_rate, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + wav + f"\r\n--{BOUNDARY}--\r\n".encode()


class RawExchange:
    """One request sent by hand with ``Expect: 100-continue``: the headers first, the body only if asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, server: TestServer, path: str, body_bytes: int, content_type: str,
                    token: str | None) -> tuple[RawExchange, str]:
        """Send the headers; the status line of the first answer (interim or final)."""
        assert server.host is not None and server.port is not None
        reader, writer = await asyncio.open_connection(server.host, server.port)
        auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n{auth}"
                      f"Content-Type: {content_type}\r\nContent-Length: {body_bytes}\r\n"
                      "Expect: 100-continue\r\n\r\n").encode())
        await writer.drain()
        exchange = cls(reader, writer)
        head = await exchange.head()
        return exchange, head

    async def head(self) -> str:
        return (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1")

    async def final(self, head: str | None = None) -> tuple[str, dict[str, object]]:
        """The final answer (read after a 100, unless its ``head`` was read already): head and JSON body."""
        head = head if head is not None else await self.head()
        length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length:")))
        body = await asyncio.wait_for(self.reader.readexactly(length), 30)
        return head, json.loads(body)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.mark.parametrize(("token", "status", "code"), [
    (None, 401, "unauthorized"),
    ("not-a-known-secret", 401, "unauthorized"),
    (RIG, 403, "forbidden"),  # a valid token without the `analyse` right
])
async def test_an_unauthorised_upload_is_refused_instead_of_invited(
        start_server: StartServer, token: str | None, status: int, code: str) -> None:
    server = await start_server(tokens=TOKENS)
    exchange, head = await RawExchange.start(server, "/api/v3/analysis", 50_000_000,
                                             f"multipart/form-data; boundary={BOUNDARY}", token)
    try:
        assert head.startswith(f"HTTP/1.1 {status} "), head  # not "100 Continue": no body was sent
        _, answer = await exchange.final(head)
        assert answer["error"]["code"] == code, answer  # type: ignore[index]
        assert "connection: close" in head.lower()  # the connection is not reused for another request
    finally:
        await exchange.close()


async def test_an_authorised_upload_is_invited_then_accepted(start_server: StartServer) -> None:
    server = await start_server(tokens=TOKENS)
    body = multipart_wav()
    exchange, head = await RawExchange.start(server, "/api/v3/analysis", len(body),
                                             f"multipart/form-data; boundary={BOUNDARY}", FILES)
    try:
        assert head.startswith("HTTP/1.1 100 Continue"), head
        exchange.writer.write(body)
        head, answer = await exchange.final()
        assert head.startswith("HTTP/1.1 202 "), (head, answer)
        assert answer["status"] == "pending"
    finally:
        await exchange.close()


async def test_a_webrtc_offer_without_a_token_is_refused_instead_of_invited(
        start_server: StartServer) -> None:
    server = await start_server(tokens=TOKENS)
    exchange, head = await RawExchange.start(server, "/api/v3/webrtc/offer", 5000, "application/json", None)
    try:
        assert head.startswith("HTTP/1.1 401 "), head
    finally:
        await exchange.close()


async def test_the_rate_limit_answers_before_100_continue_and_counts_each_request_once(
        start_server: StartServer) -> None:
    server = await start_server(rate_limit_per_s=0.01, rate_limit_burst=2)
    body = multipart_wav()
    for _ in range(2):  # the burst: each request takes one token, though checked before and after the 100
        exchange, head = await RawExchange.start(server, "/api/v3/analysis", len(body),
                                                 f"multipart/form-data; boundary={BOUNDARY}", None)
        try:
            assert head.startswith("HTTP/1.1 100 Continue"), head
            exchange.writer.write(body)
            head, answer = await exchange.final()
            assert head.startswith("HTTP/1.1 202 "), (head, answer)
        finally:
            await exchange.close()
    exchange, head = await RawExchange.start(server, "/api/v3/analysis", len(body),
                                             f"multipart/form-data; boundary={BOUNDARY}", None)
    try:
        assert head.startswith("HTTP/1.1 429 "), head
        assert "retry-after:" in head.lower()
    finally:
        await exchange.close()
