"""Every documented error of the publisher endpoint, with its code and close code, through the real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest

from tests.conftest import StartServer
from tests.stream_client import Client, Publisher, of_type, until_listed

START = {"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le"}


async def fatal(client: Client) -> tuple[dict[str, Any], int | None]:
    """The error message that precedes the close, and the close code."""
    messages = await client.receive_all()
    errors = of_type(messages, "error")
    assert errors, messages
    return errors[0], messages[-1]["code"]


async def test_http_refusals_are_json(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server()
    async with http.get(server.make_url("/api/v3/stream?codec=xml")) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_codec"
    async with http.get(server.make_url("/api/v3/stream")) as resp:
        assert resp.status == 426
        assert (await resp.json())["error"]["code"] == "websocket_required"
    async with http.get(server.make_url("/api/v3/streams/abc/events")) as resp:
        assert resp.status == 426


@pytest.mark.parametrize(
    ("first", "code", "close_code"),
    [
        (b"\x00\x00\x00\x00", "not_started", 1008),  # audio before start
        ({"type": "configure", "settings": {}}, "not_started", 1008),
        ({"type": "stop"}, "not_started", 1008),
        ({"type": "hello"}, "unknown_type", 1008),
        ("{not json", "bad_json", 1007),
        ('["start"]', "bad_message", 1007),
        ({"sample_rate": 16000}, "bad_message", 1007),
        ({**START, "sample_rate": "fast"}, "bad_start", 1007),
        ({**START, "sample_rate": 44100.5}, "bad_start", 1007),
        ({k: v for k, v in START.items() if k != "channels"}, "bad_start", 1007),
        ({**START, "sample_rate": 4000}, "unsupported_format", 1003),
        ({**START, "sample_rate": 384000}, "unsupported_format", 1003),
        ({**START, "channels": 0}, "unsupported_format", 1003),
        ({**START, "encoding": "mp3"}, "unsupported_format", 1003),
        ({**START, "rate": 1}, "bad_message", 1007),
        ({**START, "settings": {"threshold": "high"}}, "bad_settings", 1007),
        ({**START, "settings": {"treshold": 1}}, "bad_settings", 1007),
        ({**START, "settings": {"odf": "yes"}}, "bad_settings", 1007),
        ({**START, "settings": [1, 2]}, "bad_settings", 1007),
    ],
)
async def test_a_bad_first_message_is_fatal(
    start_server: StartServer, http: aiohttp.ClientSession, first: Any, code: str, close_code: int
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    if isinstance(first, bytes):
        await publisher.ws.send_bytes(first)
    elif isinstance(first, str):
        await publisher.ws.send_str(first)
    else:
        await publisher.send(first)
    error, closed = await fatal(publisher)
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert closed == close_code


async def test_msgpack_framing_errors(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server()
    text = await Publisher.open(http, server, "msgpack")
    await text.ws.send_str(json.dumps(START))
    error, closed = await fatal(text)
    assert (error["code"], closed) == ("bad_frame", 1003)

    garbage = await Publisher.open(http, server, "msgpack")
    await garbage.ws.send_bytes(b"\xc1\xc1\xc1")
    error, closed = await fatal(garbage)
    assert (error["code"], closed) == ("bad_msgpack", 1007)

    audio = await Publisher.open(http, server, "msgpack")
    await audio.start(16000)
    await audio.ws.send_bytes(msgpack.packb({"type": "audio", "data": "not bytes"}))
    error, closed = await fatal(audio)
    assert (error["code"], closed) == ("bad_audio", 1007)


async def test_non_fatal_errors_keep_the_stream_and_lose_nothing(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.start(16000, channels=2)
    click = np.zeros((1600, 2), dtype=np.float32)
    click[800:816] = 0.9
    await publisher.send_audio(click)
    await publisher.ws.send_bytes(b"\x00" * 12)  # 12 bytes: not a whole number of 8-byte stereo frames
    nan = np.zeros((160, 2), dtype=np.float32)
    nan[5, 1] = np.nan
    await publisher.send_audio(nan)
    inf = np.full((160, 2), np.inf, dtype=np.float32)
    await publisher.send_audio(inf)
    await publisher.send({"type": "hello"})
    await publisher.send(START)
    await publisher.send({"type": "configure", "settings": {"threshold": -1}})
    await publisher.send({"type": "configure", "settings": {"hop_ms": 5}})
    await publisher.send({"type": "configure", "settings": {"threshold": 3}, "extra": 1})
    await publisher.send({"type": "configure"})
    await publisher.send({"type": "configure", "settings": {"min_interval_ms": 50}})
    await publisher.send_audio(click)
    messages = await publisher.stop()
    codes = [m["code"] for m in of_type(messages, "error")]
    assert codes == ["bad_audio_length", "bad_samples", "bad_samples", "unknown_type", "already_started",
                     "bad_settings", "bad_settings", "bad_message", "bad_settings"]
    for error in of_type(messages, "error"):
        assert error["message"]
    assert "previous settings" in of_type(messages, "error")[5]["message"]
    configured = of_type(messages, "configured")
    assert len(configured) == 1
    assert configured[0]["settings"]["threshold"] == 1.0  # the rejected values never applied
    assert configured[0]["settings"]["min_interval_ms"] == 50.0
    assert configured[0]["settings"]["hop_ms"] == 10.0
    stopped = of_type(messages, "stopped")[0]
    assert stopped["duration"] == pytest.approx(0.2)  # rejected frames are not part of the stream
    assert stopped["onsets"] == 2
    assert [round(m["time"], 2) for m in of_type(messages, "onset")] == [0.05, 0.15]
    assert messages[-1]["code"] == 1000


async def test_messages_after_stop_are_ignored(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.start(16000)
    await publisher.send_audio(np.zeros(1600, dtype=np.float32))
    await publisher.send({"type": "stop"})
    await publisher.send_audio(np.zeros(1600, dtype=np.float32))
    messages = await publisher.receive_all()
    assert of_type(messages, "stopped")[0]["duration"] == pytest.approx(0.1)
    assert messages[-1]["code"] == 1000


async def test_a_message_over_the_size_limit_is_explained_then_closed_1009(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_message_bytes=4000)
    publisher = await Publisher.open(http, server)
    await publisher.start(16000)
    await publisher.send_audio(np.zeros(1000, dtype=np.float32))  # exactly 4000 bytes: accepted
    await publisher.send_audio(np.zeros(1001, dtype=np.float32))
    messages = await publisher.receive_all()
    error = of_type(messages, "error")[0]
    assert error["code"] == "message_too_big"
    assert "4000 bytes" in error["message"]
    assert messages[-1]["code"] == 1009


async def test_idle_stream_gets_an_error_its_onsets_then_close_1008(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(idle_timeout_s=0.4, status_interval_s=0.1)
    publisher = await Publisher.open(http, server)
    await publisher.start(16000, settings={"lookahead_ms": 10.0})
    click = np.zeros(3200, dtype=np.float32)
    click[800:816] = 0.9
    click[3000:3016] = 0.9  # 12.5 ms before the end, inside the look-ahead: only the final flush reports it
    await publisher.send_audio(click)
    messages = await publisher.receive_all()
    error = of_type(messages, "error")[0]
    assert error["code"] == "idle_timeout"
    assert len(of_type(messages, "onset")) == 2
    assert messages.index(error) < messages.index(of_type(messages, "onset")[-1])
    assert messages[-1]["code"] == 1008


async def test_no_start_within_the_idle_timeout(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(idle_timeout_s=0.3)
    publisher = await Publisher.open(http, server)
    error, closed = await fatal(publisher)
    assert (error["code"], closed) == ("idle_timeout", 1008)


async def test_stream_limits_in_all_and_per_client(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_streams=2, max_streams_per_client=1)
    first = await Publisher.open(http, server)
    await first.start(16000)
    # The client's second publisher socket is refused at its handshake: a socket counts from there, started
    # or not (a WebRTC stream taking the last place first still gets client_stream_limit, close 1008).
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await Publisher.open(http, server)
    assert refused.value.status == 429

    full = await start_server(max_streams=1)
    one = await Publisher.open(http, full)
    await one.start(16000)
    two = await Publisher.open(http, full)
    await two.send(START)
    error, closed = await fatal(two)
    assert (error["code"], closed) == ("server_full", 1013)
    await one.stop()
    three = await Publisher.open(http, full)  # room again once the first stream ended
    await three.start(16000)
    assert of_type(await three.stop(), "stopped")
    await first.stop()


async def test_a_client_that_sends_audio_is_not_pinged_and_one_that_stops_sending_is(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Every read from the peer puts the next ping off by a whole heartbeat: a publisher streaming 20 ms
    chunks for five heartbeats without answering pings is never pinged, then silent it is pinged within
    the heartbeat and a half, and dropped for not answering."""
    server = await start_server(heartbeat_s=0.2)
    ws = await http.ws_connect(server.make_url("/api/v3/stream"), autoping=False)
    await ws.send_str(json.dumps(START))
    assert json.loads((await ws.receive(timeout=30)).data)["type"] == "started"
    chunk = np.zeros(320, np.float32).tobytes()
    kinds: list[aiohttp.WSMsgType] = []

    async def read() -> None:
        while True:
            message = await ws.receive()
            kinds.append(message.type)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    reader = asyncio.create_task(read())
    for _ in range(50):  # 1 s of audio in 20 ms chunks
        await ws.send_bytes(chunk)
        await asyncio.sleep(0.02)
    assert aiohttp.WSMsgType.PING not in kinds and not reader.done()
    silent_from = asyncio.get_running_loop().time()
    await asyncio.wait_for(reader, 30)
    assert aiohttp.WSMsgType.PING in kinds
    assert asyncio.get_running_loop().time() - silent_from < 5
    await until_listed(http, server, 0)  # the server ended the stream


async def test_a_client_that_does_not_answer_pings_is_dropped(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(heartbeat_s=0.2)
    ws = await http.ws_connect(server.make_url("/api/v3/stream"), autoping=False)
    await ws.send_str(json.dumps(START))
    kinds = []
    while True:
        message = await ws.receive(timeout=30)
        kinds.append(message.type)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
    assert aiohttp.WSMsgType.PING in kinds
    await until_listed(http, server, 0)  # the server ended the stream
