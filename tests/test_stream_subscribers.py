"""Listing live streams and watching them: ``GET /api/v3/streams`` and ``/api/v3/streams/{id}/events``."""

from __future__ import annotations

import asyncio
import gc
import socket
import time

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from server.dsp import detect_onsets
from server.transport.stream_socket import StreamSocket
from testkit import signals
from tests.conftest import StartServer
from tests.stream_client import Client, Publisher, listed_streams, of_type, onset_times, until_listed


async def subscribe(http: aiohttp.ClientSession, server: TestServer, stream_id: str,
                    codec: str = "json") -> Client:
    client = await Client.connect(http, server, f"/api/v3/streams/{stream_id}/events", codec)
    subscribed = await client.receive()
    assert subscribed["type"] == "subscribed", subscribed
    assert subscribed["stream"]["stream_id"] == stream_id
    return client


async def test_listing_and_subscribers_in_both_codecs(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(status_interval_s=0.05)
    assert await listed_streams(http, server) == []
    sample_rate = 44100
    signal = signals.drums(sr=sample_rate, duration_s=2.5, seed=3)
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate, channels=1, settings={"threshold": 1.5})
    stream_id = started["stream_id"]
    watchers = [await subscribe(http, server, stream_id, codec) for codec in ("json", "json", "msgpack")]
    [entry] = await listed_streams(http, server)
    assert entry["stream_id"] == stream_id
    assert (entry["sample_rate"], entry["channels"], entry["encoding"]) == (sample_rate, 1, "pcm_f32le")
    assert entry["settings"] == started["settings"]
    assert entry["subscribers"] == 3
    assert entry["transport"] == "websocket"
    assert abs(entry["started_at"] - time.time()) < 60

    await publisher.stream(signal.samples, sample_rate, pace=0.2)
    published = await publisher.stop()
    want = onset_times(published)
    assert len(want) > 3
    for watcher in watchers:
        messages = await watcher.receive_all()
        assert onset_times(messages) == want
        assert of_type(messages, "status")
        assert messages[-2] == {"type": "ended", "stream_id": stream_id, "reason": "stopped",
                                "duration": pytest.approx(2.5), "onsets": len(want)}
        assert messages[-1]["code"] == 1000
        assert not of_type(messages, "overflow")
    await until_listed(http, server, 0)


async def test_unknown_stream_and_subscriber_limit(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_subscribers_per_stream=1)
    unknown = await Client.connect(http, server, "/api/v3/streams/no-such-stream/events")
    messages = await unknown.receive_all()
    assert messages[0]["type"] == "error" and messages[0]["code"] == "unknown_stream"
    assert messages[-1]["code"] == 1008

    publisher = await Publisher.open(http, server)
    stream_id = (await publisher.start(8000))["stream_id"]
    first = await subscribe(http, server, stream_id, "msgpack")
    second = await Client.connect(http, server, f"/api/v3/streams/{stream_id}/events", "msgpack")
    messages = await second.receive_all()
    assert messages[0]["code"] == "subscriber_limit"
    assert messages[-1]["code"] == 1013
    await first.ws.send_str("hello")  # subscribers send nothing: a non-fatal error
    assert (await first.receive())["code"] == "unexpected_message"
    await publisher.stop()
    assert (await first.receive_all())[-2]["type"] == "ended"


async def test_disconnected_publisher_still_flushes_to_subscribers(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate = 16000
    samples = np.zeros(sample_rate, dtype=np.float32)
    for at_s in (0.25, 0.5, 0.98):  # the last click is inside the look-ahead when the publisher vanishes
        samples[round(at_s * sample_rate):][:16] = 0.9
    publisher = await Publisher.open(http, server)
    stream_id = (await publisher.start(sample_rate))["stream_id"]
    watcher = await subscribe(http, server, stream_id)
    await publisher.stream(samples, sample_rate)
    await publisher.close()
    messages = await watcher.receive_all()
    assert onset_times(messages) == pytest.approx([o.time for o in detect_onsets(samples, sample_rate)])
    assert len(of_type(messages, "onset")) == 3
    assert messages[-2]["type"] == "ended" and messages[-2]["reason"] == "disconnected"


def stream_sockets() -> int:
    """The server-side stream sockets alive in this process. By ``type()``, not ``isinstance``: that reads
    each object's ``__class__``, which on some objects of other modules warns (torch's deprecated
    ``reduce_op``, once an earlier test has imported torch), an error under this suite's warning filter."""
    return sum(issubclass(type(o), StreamSocket) for o in gc.get_objects())


async def test_closed_sockets_are_freed_without_the_collector(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A publisher's and a subscriber's server-side sockets are freed once their connections close, by
    reference counting: aiohttp's protocol kept each alive through its read callback (a reference cycle),
    until the garbage collector's next full pass."""
    server = await start_server()
    gc.collect()
    gc.disable()
    try:
        publisher = await Publisher.open(http, server)
        stream_id = (await publisher.start(16000))["stream_id"]
        watcher = await subscribe(http, server, stream_id)
        assert stream_sockets() == 2
        await publisher.stream(np.zeros(8000, dtype=np.float32), 16000)
        await publisher.stop()
        await publisher.close()
        await watcher.receive_all()
        for _ in range(100):
            if not stream_sockets():
                break
            await asyncio.sleep(0.02)
        assert stream_sockets() == 0
    finally:
        gc.enable()


def small_receive_buffer_socket(addr_info: tuple[object, ...]) -> socket.socket:
    """A client socket with a tiny receive window, so a subscriber that does not read backs up quickly."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)  # type: ignore[arg-type]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    return sock


async def test_a_subscriber_that_does_not_read_never_slows_the_publisher(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(subscriber_queue=64, max_buffer_s=60.0)
    sample_rate = 8000
    samples = np.zeros(120 * sample_rate, dtype=np.float32)
    samples[::400] = 0.9  # a click every 50 ms: 2400 onsets, and the detection function at 500 values/s
    publisher = await Publisher.open(http, server)
    stream_id = (await publisher.start(sample_rate, settings={"odf": True, "hop_ms": 2}))["stream_id"]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer_socket)
    ) as slow_http:
        slow = await subscribe(slow_http, server, stream_id)  # then never reads until the stream ended
        fast = await subscribe(http, server, stream_id)
        fast_messages = asyncio.create_task(fast.receive_all())
        await publisher.stream(samples, sample_rate, chunk_s=0.25, pace=0.02)  # small bursts of events
        published = await publisher.stop()
        want = onset_times(published)
        assert len(want) == 2400
        assert onset_times(await fast_messages) == want  # the other subscriber lost nothing
        messages = await slow.receive_all()
    overflows = of_type(messages, "overflow")
    assert overflows, "the slow subscriber should have been told of dropped events"
    dropped = sum(m["dropped"] for m in overflows)
    delivered = [m for m in messages if m["type"] in ("onset", "status", "odf")]
    sent = [m for m in await_all_events(published) if m["type"] in ("onset", "status", "odf")]
    assert len(delivered) + dropped == len(sent)
    assert messages[-2]["type"] == "ended"  # the final event always arrives
    assert messages[-1]["code"] == 1000


def await_all_events(published: list[dict[str, object]]) -> list[dict[str, object]]:
    """What subscribers are sent: the publisher's events minus its own replies."""
    return [m for m in published if m["type"] not in ("stopped", "configured", "<closed>", "error")]
