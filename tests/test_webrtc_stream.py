"""WebRTC publishing end to end: a real aiortc client streams a seeded signal with known onsets over a
real peer connection to the real server and gets the onsets back on its ``events`` data channel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from server import appkeys
from testkit import signals
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.conftest import StartServer

TAIL_S = 0.4  # silence streamed after the signal so aiortc's jitter buffer releases its last frames
MAX_CODEC_DELAY_S = 0.030  # constant offset allowed between true and reported onset times
SPREAD_S = 0.015  # each onset within this of (true time + the measured constant offset)


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def stream_and_stop(client: WebRtcClient, track: ArrayTrack) -> list[dict[str, Any]]:
    """Let ``track`` play out (plus a tail), send ``stop``, return every message until the channel closes."""
    while not track.finished:
        await asyncio.sleep(0.02)
    await asyncio.sleep(TAIL_S)
    client.send({"type": "stop"})
    return await client.receive_until("<closed>")


def onset_times(messages: list[dict[str, Any]]) -> np.ndarray:
    return np.array([m["time"] for m in messages if m["type"] == "onset"])


def check_onsets(got: np.ndarray, truth: np.ndarray, extras: bool = False) -> float:
    """Every true onset found once, all shifted by one constant codec delay; returns that delay.

    With ``extras``, reported onsets that match no true one (codec artefacts) are ignored.
    """
    if extras:
        got = np.array([got[np.argmin(np.abs(got - t))] for t in truth])
    assert len(got) == len(truth), (got, truth)
    offsets = got - truth
    delay = float(np.median(offsets))
    assert -0.005 <= delay <= MAX_CODEC_DELAY_S, offsets
    assert np.all(np.abs(offsets - delay) <= SPREAD_S), offsets
    return delay


async def test_onsets_arrive_on_the_data_channel(server: TestServer, http: aiohttp.ClientSession) -> None:
    signal = signals.clicks(sr=48000, duration_s=3.0, seed=11)
    track = ArrayTrack(signal.samples, paused=True)  # resumed once a subscriber watches
    client = await WebRtcClient.offerer(track).connect(http, base_url(server))
    try:
        assert client.answer["type"] == "answer" and client.answer["sample_rate"] == 48000
        listing = await (await http.get(server.make_url("/api/v3/streams"))).json()
        entry = next(s for s in listing["streams"] if s["stream_id"] == client.stream_id)
        assert entry["transport"] == "webrtc" and entry["channels"] == 1
        subscriber = await http.ws_connect(server.make_url(f"/api/v3/streams/{client.stream_id}/events"))
        assert json.loads((await subscriber.receive(timeout=30)).data)["type"] == "subscribed"
        track.resume()
        messages = await stream_and_stop(client, track)
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "started" and messages[0]["stream_id"] == client.stream_id
        assert "status" in kinds
        assert kinds[-2:] == ["stopped", "<closed>"]
        got = onset_times(messages)
        delay = check_onsets(got, signal.onsets_s)
        print(f"codec delay {delay * 1000:.1f} ms")
        stopped = messages[-2]
        assert stopped["onsets"] == len(got)
        assert stopped["duration"] >= len(signal.samples) / 48000
        # A subscriber saw the same onsets, then the end.
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "ended":
            events.append(json.loads((await subscriber.receive(timeout=30)).data))
        np.testing.assert_array_equal(onset_times(events), got)
        assert events[-1]["reason"] == "stopped"
        await subscriber.close()
        assert await client.wait_state("closed", "failed") == "closed"  # the server hung up
    finally:
        await client.close()
    for _ in range(100):
        if not len(server.app[appkeys.WEBRTC].peers):
            break
        await asyncio.sleep(0.05)
    assert len(server.app[appkeys.WEBRTC].peers) == 0
    assert len(server.app[appkeys.STREAMS].registry) == 0


@pytest.mark.parametrize("loss", ["packets", "timestamps"])
async def test_lost_audio_does_not_shift_later_onsets(loss: str, server: TestServer,
                                                      http: aiohttp.ClientSession) -> None:
    """160 ms of audio never arrives, well between two onsets: RTP packets lost on the way (a hole in the
    sequence numbers) or frames never sent (a jump in the time stamps, as with discontinuous
    transmission). Either way the onsets after it keep their true times."""
    signal = signals.clicks(sr=48000, duration_s=3.0, seed=12)
    truth = signal.onsets_s
    widest = int(np.argmax(np.diff(truth)))
    assert truth[widest + 1] - truth[widest] > 0.3
    gap_start_s, gap_s = float(truth[widest]) + 0.06, 0.16
    if loss == "timestamps":
        track = ArrayTrack(signal.samples, gaps_s=[(gap_start_s, gap_s)])
        client = WebRtcClient.offerer(track)
    else:
        track = ArrayTrack(signal.samples)
        client = WebRtcClient.offerer(track)
        first = 1 + round(gap_start_s / 0.02)
        client.drop_rtp(set(range(first, first + round(gap_s / 0.02))))
    await client.connect(http, base_url(server))
    try:
        messages = await stream_and_stop(client, track)
    finally:
        await client.close()
    check_onsets(onset_times(messages), truth)  # without filling the gap the later ones come 160 ms early


@pytest.mark.parametrize("codec", ["pcmu", "g722"])
async def test_other_codecs_are_resampled(codec: str, server: TestServer,
                                          http: aiohttp.ClientSession) -> None:
    """G.711 (8 kHz) and G.722 (16 kHz, on an 8 kHz RTP clock) reach the 48 kHz detector at the right times.

    G.722's ADPCM adds transients of its own to clicks on silence: only its true onsets are checked."""
    signal = signals.clicks(sr=48000, duration_s=2.0, seed=13)
    track = ArrayTrack(signal.samples)
    client = await WebRtcClient.offerer(track, codec=codec).connect(http, base_url(server))
    try:
        assert f"{codec.upper()}/" in client.answer["sdp"].upper()
        messages = await stream_and_stop(client, track)
    finally:
        await client.close()
    check_onsets(onset_times(messages), signal.onsets_s, extras=codec == "g722")


async def test_configure_and_mistakes_on_the_channel(start_server: StartServer,
                                                     http: aiohttp.ClientSession) -> None:
    server = await start_server()
    track = ArrayTrack(signals.clicks(sr=48000, duration_s=1.0, seed=14).samples)
    client = await WebRtcClient.offerer(track).connect(http, base_url(server), {"threshold": 1.5})
    try:
        assert client.answer["settings"]["threshold"] == 1.5
        assert (await client.receive())["type"] == "started"

        async def reply(message: dict[str, Any] | str | bytes) -> dict[str, Any]:
            client.send(message)
            while True:
                answer = await client.receive()
                if answer["type"] not in ("status", "onset"):
                    return answer

        configured = await reply({"type": "configure", "settings": {"threshold": 2.5}})
        assert configured["type"] == "configured" and configured["settings"]["threshold"] == 2.5
        for message, code in [
            ({"type": "configure", "settings": {"threshold": "high"}}, "bad_settings"),
            ({"type": "configure", "settings": {"no_such_setting": 1}}, "bad_settings"),
            ({"type": "configure"}, "bad_settings"),
            ("{not json", "bad_json"),
            ("[1, 2]", "bad_message"),
            (b"\x00\x01", "bad_frame"),
            ({"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le"},
             "already_started"),
            ({"type": "dance"}, "unknown_type"),
            ("x" * 70000, "message_too_big"),
        ]:
            error = await reply(message)
            assert error["type"] == "error" and error["code"] == code, (message, error)
            assert "fatal" not in error
        listing = await (await http.get(server.make_url("/api/v3/streams"))).json()
        assert listing["streams"][0]["settings"]["threshold"] == 2.5  # the bad ones changed nothing
        messages = await stream_and_stop(client, track)
        assert messages[-2]["type"] == "stopped"
    finally:
        await client.close()
