"""How WebRTC streams end: the client hangs up, never connects, goes silent, or the server shuts down.
Each time the peer connection is closed, the stream ends for its subscribers, and nothing is left."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer

from server import appkeys
from testkit import signals
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.conftest import StartServer

WAIT_S = 20.0


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def until(condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def nothing_left(server: TestServer) -> bool:
    return not len(server.app[appkeys.WEBRTC].peers) and not len(server.app[appkeys.STREAMS].registry)


async def subscribe(http: aiohttp.ClientSession, server: TestServer, stream_id: str
                    ) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(server.make_url(f"/api/v3/streams/{stream_id}/events"))
    assert json.loads((await ws.receive(timeout=WAIT_S)).data)["type"] == "subscribed"
    return ws


async def ended_event(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int]:
    """The subscriber's ``ended`` event and how many onsets came before it."""
    onsets = 0
    while True:
        event = json.loads((await ws.receive(timeout=WAIT_S)).data)
        if event["type"] == "onset":
            onsets += 1
        if event["type"] == "ended":
            return event, onsets


async def test_client_hangs_up(server: TestServer, http: aiohttp.ClientSession) -> None:
    signal = signals.clicks(sr=48000, duration_s=3.0, seed=21)
    track = ArrayTrack(signal.samples, paused=True)
    client = await WebRtcClient.offerer(track).connect(http, base_url(server))
    subscriber = await subscribe(http, server, client.stream_id)
    track.resume()
    await until(lambda: track.position >= 48000 * 1.5)
    await client.close()
    ended, onsets = await ended_event(subscriber)
    assert ended["reason"] == "disconnected"
    assert ended["onsets"] == onsets >= int(np.sum(signal.onsets_s < 1.0))  # what was received is analysed
    await until(lambda: nothing_left(server))
    listing = await (await http.get(server.make_url("/api/v3/streams"))).json()
    assert listing["streams"] == []
    await subscriber.close()


async def test_connection_never_established(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    """The client posts an offer but never applies the answer: ICE never completes."""
    server = await start_server(webrtc_connect_timeout_s=1.0)
    client = WebRtcClient.offerer(ArrayTrack(np.zeros(48000, np.float32)))
    try:
        response = await client.post_offer(http, base_url(server))
        answer = await response.json()
        assert response.status == 200
        subscriber = await subscribe(http, server, answer["stream_id"])
        started_s = time.monotonic()
        ended, _ = await ended_event(subscriber)
        assert ended["reason"] == "connect_timeout"
        assert time.monotonic() - started_s < 10.0
        await until(lambda: nothing_left(server))
        await subscriber.close()
    finally:
        await client.close()


async def test_silent_client_times_out(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    """Media stops (a vanished or paused client): the idle timeout ends the stream with a fatal error on
    the data channel, after the onsets of what was received."""
    server = await start_server(idle_timeout_s=2.0)
    signal = signals.clicks(sr=48000, duration_s=2.0, seed=22)
    track = ArrayTrack(signal.samples)
    client = await WebRtcClient.offerer(track).connect(http, base_url(server))
    try:
        await until(lambda: track.position >= 48000 * 1.2)
        track.pause()
        messages = await client.receive_until("<closed>")
        errors = [m for m in messages if m["type"] == "error"]
        assert [(e["code"], e["fatal"]) for e in errors] == [("idle_timeout", True)]
        assert sum(m["type"] == "onset" for m in messages) >= int(np.sum(signal.onsets_s < 0.9))
        assert await client.wait_state("closed", "failed") == "closed"
        await until(lambda: nothing_left(server))
    finally:
        await client.close()


async def test_server_shutdown_closes_peer_connections(start_server: StartServer,
                                                       http: aiohttp.ClientSession) -> None:
    server = await start_server()
    track = ArrayTrack(np.zeros(48000 * 10, np.float32))
    client = await WebRtcClient.offerer(track).connect(http, base_url(server))
    try:
        await until(lambda: track.position >= 48000 * 0.3)
        peers = server.app[appkeys.WEBRTC].peers
        assert len(peers) == 1
        await server.close()
        assert len(peers) == 0
        assert await client.wait_state("closed", "failed") in ("closed", "failed")
    finally:
        await client.close()
