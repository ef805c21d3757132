"""Promises of docs/protocol.md that a client written from the document alone found broken (branch docaudit).

- Whole-file analysis: ``beats`` are "exactly as a live stream of the file would report them". The live
  ``beat`` event's ``time`` is rounded to 1 µs; the file result's was not (``4.010000000000001`` against
  ``4.01``). ``tempo_bpm`` is 60 over the median interval of the beats the result shows.
- WebRTC offer: an ``sdp`` that is not a session description at all is ``bad_sdp`` (it was
  ``no_audio_track``).
- ``start`` with a ``sample_rate`` or ``channels`` of NaN or ±Infinity (JSON ``NaN``, ``Infinity``, ``1e400``;
  msgpack floats) is ``bad_start``, close 1007 (the socket was closed 1000 with no error message).
"""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from testkit.rhythm_signals import beat_times, drum_track
from tests.analysis_files import post_file, wait_finished
from tests.conftest import StartServer
from tests.stream_client import Client, Publisher, of_type

BPM = 112.0


def base(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("settings", [{}, {"method": "neural"}])
async def test_a_file_streamed_live_gives_the_file_results_onsets_and_beats_exactly(
        start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path,
        settings: dict[str, str]) -> None:
    # The whole file fits in the stream's buffer, so nothing is dropped however fast it is sent.
    server = await start_server(max_buffer_s=60.0)
    track = drum_track(beat_times([(BPM, 12.0)]), seed=57)
    rate = track.sample_rate
    encoded = io.BytesIO()
    sf.write(encoded, track.audio, rate, format="WAV", subtype="FLOAT")
    path = tmp_path / "kit.wav"
    path.write_bytes(encoded.getvalue())
    status, body = await post_file(http, base(server), path, settings=settings)
    assert status == 202, body
    result = (await wait_finished(http, base(server), body["task_id"]))["result"]

    publisher = await Publisher.open(http, server)
    await publisher.start(rate, settings=settings)
    await publisher.stream(track.audio, rate, chunk_s=0.02)
    messages = await publisher.stop()
    assert of_type(messages, "stopped")[0]["dropped_s"] == 0

    onsets = [{"time": o["time"], "strength": o["strength"], "band": o["band"]}
              for o in of_type(messages, "onset")]
    assert onsets == result["onsets"]
    beats = [{key: b[key] for key in ("time", "bar_position") if key in b} for b in of_type(messages, "beat")]
    assert len(beats) >= 10
    assert beats == result["beats"]  # the same floats, not merely close
    times = [b["time"] for b in result["beats"]]
    assert result["tempo_bpm"] == float(60.0 / np.median(np.diff(times)))


@pytest.mark.parametrize("sdp", ["garbage", "hello\r\nworld\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"])
async def test_an_offer_that_is_no_session_description_is_bad_sdp(server: TestServer,
                                                                   http: aiohttp.ClientSession,
                                                                   sdp: str) -> None:
    async with http.post(server.make_url("/api/v3/webrtc/offer"), json={"sdp": sdp, "type": "offer"}) as r:
        body = await r.json()
    assert (r.status, body["error"]["code"]) == (400, "bad_sdp"), body


@pytest.mark.parametrize(("codec", "start"), [
    ("json", '{"type": "start", "sample_rate": Infinity, "channels": 1, "encoding": "pcm_f32le"}'),
    ("json", '{"type": "start", "sample_rate": NaN, "channels": 1, "encoding": "pcm_f32le"}'),
    ("json", '{"type": "start", "sample_rate": 48000, "channels": 1e400, "encoding": "pcm_f32le"}'),
    ("json", '{"type": "start", "sample_rate": -Infinity, "channels": 1, "encoding": "pcm_s16le"}'),
    ("msgpack", {"type": "start", "sample_rate": float("inf"), "channels": 1, "encoding": "pcm_f32le"}),
    ("msgpack", {"type": "start", "sample_rate": 48000, "channels": float("nan"), "encoding": "pcm_f32le"}),
])
async def test_a_start_with_a_rate_or_channels_not_finite_is_bad_start(
        server: TestServer, http: aiohttp.ClientSession, codec: str, start: str | dict[str, object]) -> None:
    client = await Client.connect(http, server, "/api/v3/stream", codec)
    if isinstance(start, str):
        await client.ws.send_str(start)
    else:
        await client.ws.send_bytes(msgpack.packb(start))
    messages = await client.receive_all()
    assert [m["type"] for m in messages] == ["error", "<closed>"], messages
    assert messages[0]["code"] == "bad_start" and messages[1]["code"] == 1007, messages


async def test_a_start_with_a_whole_float_rate_is_that_rate(server: TestServer,
                                                            http: aiohttp.ClientSession) -> None:
    client = await Client.connect(http, server, "/api/v3/stream")
    await client.ws.send_str('{"type": "start", "sample_rate": 48000.0, "channels": 2.0, '
                             '"encoding": "pcm_s16le"}')
    started = await client.receive()
    assert (started["type"], started["sample_rate"], started["channels"]) == ("started", 48000, 2), started
    await client.close()


@pytest.mark.parametrize("start", [
    {"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le", b"rate": 1},
    {"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le", 7: 1, "x": 2},
])
async def test_a_msgpack_start_with_a_key_that_is_no_string_is_bad_message(
        server: TestServer, http: aiohttp.ClientSession, start: dict[object, object]) -> None:
    # msgpack maps may have bytes or integer keys; such a key is an unknown field (it was a TypeError in
    # the receive loop, found by tests/test_fuzz_server.py once such faults were no longer silent).
    client = await Client.connect(http, server, "/api/v3/stream", "msgpack")
    await client.ws.send_bytes(msgpack.packb(start, use_bin_type=True))
    messages = await client.receive_all()
    assert [m["type"] for m in messages] == ["error", "<closed>"], messages
    assert messages[0]["code"] == "bad_message" and messages[1]["code"] == 1007, messages


async def test_msgpack_settings_with_keys_that_are_no_strings_are_bad_settings(
        server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await Client.connect(http, server, "/api/v3/stream", "msgpack")
    await client.send({"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le"})
    assert (await client.receive())["type"] == "started"
    await client.ws.send_bytes(msgpack.packb({"type": "configure", "settings": {1: 2, b"k": 3, "z": 4}}))
    error = await client.receive()
    assert (error["type"], error["code"]) == ("error", "bad_settings"), error
    await client.send({"type": "configure", "settings": {"threshold": 1.5}})
    assert (await client.receive())["type"] == "configured"
    await client.close()
