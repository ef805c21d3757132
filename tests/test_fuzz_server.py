"""Malformed traffic against a real server: never a 500, never a crash, and a good client is still served."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random

import aiohttp
import msgpack
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartServer
from tests.stream_client import Publisher, of_type, onset_times

SAMPLE_RATE = 16000
DOCUMENTED_CLOSES = {1000, 1003, 1007, 1008, 1009}
START = {"type": "start", "sample_rate": SAMPLE_RATE, "channels": 2, "encoding": "pcm_f32le"}


def garbage(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def bad_sequences(rng: random.Random) -> list[list[tuple[str, object]]]:
    """Each a list of (kind, payload) sent on one socket: text, bytes, or msgpack-packed objects."""
    nan = np.array([0.1, np.nan, np.inf, -np.inf], dtype="<f4").tobytes()
    return [
        [("text", "{not json")],
        [("text", json.dumps([1, 2, 3]))],
        [("text", json.dumps({"type": 5}))],
        [("bytes", garbage(rng, 64))],  # audio before start
        [("text", json.dumps({"type": "configure", "settings": {}}))],  # out of order
        [("text", json.dumps({**START, "sample_rate": "fast"}))],
        [("text", json.dumps({**START, "channels": 10**9}))],
        [("text", json.dumps({**START, "settings": {"threshold": float("1e400")}}))],
        [("text", json.dumps(START)), ("bytes", b"\x00" * 7), ("bytes", nan * 2), ("bytes", nan[:5]),
         ("text", json.dumps(START)), ("text", json.dumps({"type": "configure", "settings": {"hop_ms": 3}})),
         ("text", json.dumps({"type": "configure", "settings": [1]})), ("text", "[]")],
        [("text", json.dumps(START)), ("bytes", b"\x00" * (70 * 1024))],  # over the message limit
        [("text", json.dumps(START)), ("text", json.dumps({"type": "stop"})), ("bytes", b"\x00" * 8)],
        [("text", json.dumps(START)), ("text", "\u0000")],
        [("msgpack", garbage(rng, 40))],
        [("msgpack", msgpack.packb({"type": "audio", "data": "not bytes"}))],
        [("msgpack", msgpack.packb({**START, "type": "start"})), ("text", "text under msgpack")],
        [("msgpack", msgpack.packb(START)), ("msgpack", msgpack.packb({"type": "audio", "data": nan}))],
        [("msgpack", msgpack.packb({1: 2, "type": "start", b"k": [1, {}]}))],
    ]


async def run_bad_socket(http: aiohttp.ClientSession, server: TestServer, path: str,
                         sequence: list[tuple[str, object]]) -> int | None:
    codec = "msgpack" if any(kind == "msgpack" for kind, _ in sequence) else "json"
    ws = await http.ws_connect(str(server.make_url(path).with_query(codec=codec)), max_msg_size=0)
    try:
        with contextlib.suppress(ConnectionResetError):  # the server may close before we are done
            for kind, payload in sequence:
                if kind == "text":
                    await ws.send_str(str(payload))
                else:
                    await ws.send_bytes(payload)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            await ws.send_str(json.dumps({"type": "stop"}) if codec == "json" else "x")
        while True:
            message = await ws.receive(timeout=30)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code
    finally:
        await ws.close()


async def bad_http(http: aiohttp.ClientSession, server: TestServer, rng: random.Random) -> list[int]:
    statuses = []
    requests: list[tuple[str, str, dict[str, object]]] = [
        ("POST", "/api/v3/analysis", {"data": garbage(rng, 500),
                                      "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}),
        ("POST", "/api/v3/analysis", {"data": garbage(rng, 500),
                                      "headers": {"Content-Type": "multipart/form-data"}}),
        ("POST", "/api/v3/analysis", {"data": b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n",
                                      "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
        ("POST", "/api/v3/analysis", {"json": {"file": 1}}),
        ("POST", "/api/v3/analysis", {"data": io.BytesIO(b"x" * (2 << 20)),
                                      "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/api/v3/webrtc/offer", {"data": garbage(rng, 300)}),
        ("POST", "/api/v3/webrtc/offer", {"json": {"sdp": "v=0\r\nnonsense", "type": "offer"}}),
        ("POST", "/api/v3/webrtc/offer", {"json": {"sdp": 5, "type": "answer", "settings": {"x": 1}}}),
        ("GET", "/api/v3/analysis/../../etc/passwd", {}),
        ("GET", "/api/v3/analysis/" + "f" * 5000, {}),
        ("GET", "/api/v3/streams/%00/events", {}),
        ("DELETE", "/api/v3/streams", {}),
        ("GET", "/api/v3/stream?codec=%ff", {}),
        ("GET", "/..%2f..%2fetc/passwd", {}),
    ]
    for method, path, kwargs in requests:
        async with http.request(method, str(server.make_url(path)), **kwargs) as resp:  # type: ignore[arg-type]
            await resp.read()
            statuses.append(resp.status)
    return statuses


async def test_malformed_traffic_never_breaks_the_server_or_a_good_client(
    start_server: StartServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(max_message_bytes=64 * 1024, rate_limit_per_s=0.0)
    rng = random.Random(7)
    good = await Publisher.open(http, server)
    await good.start(SAMPLE_RATE)
    samples = np.zeros(SAMPLE_RATE * 3, dtype=np.float32)
    clicks_s = [0.2 + 0.25 * k for k in range(11)]
    for t in clicks_s:
        samples[round(t * SAMPLE_RATE):][:16] = 0.9
    good_stream = asyncio.create_task(good.stream(samples, SAMPLE_RATE, chunk_s=0.02, pace=0.5))

    with caplog.at_level(logging.ERROR):
        closes = []
        for _ in range(2):
            for sequence in bad_sequences(rng):
                closes.append(await run_bad_socket(http, server, "/api/v3/stream", sequence))
            uploads = [*bad_sequences(rng)[:6], [("text", json.dumps({"type": "upload", "size": -1}))],
                       [("text", json.dumps({"type": "end"}))]]
            for sequence in uploads:
                closes.append(await run_bad_socket(http, server, "/api/v3/upload", sequence))
            events = "/api/v3/streams/nope/events"
            closes.append(await run_bad_socket(http, server, events, [("bytes", b"x")]))
            statuses = await bad_http(http, server, rng)
            assert all(400 <= status < 500 for status in statuses), statuses
        await good_stream
        messages = await good.stop()
    assert set(closes) <= DOCUMENTED_CLOSES, closes
    assert not [r for r in caplog.records if r.name.startswith(("server", "aiohttp"))], caplog.text
    assert of_type(messages, "stopped")[0]["duration"] == pytest.approx(3.0)
    assert messages[-1]["code"] == 1000
    assert of_type(messages, "error") == [] and of_type(messages, "warning") == []
    found = onset_times(messages)
    assert all(any(abs(f - t) < 0.02 for f in found) for t in clicks_s)
    async with http.get(server.make_url("/healthz")) as resp:
        assert resp.status == 200
