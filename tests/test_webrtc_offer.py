"""``POST /api/v3/webrtc/offer``: every refusal is a documented 4xx/503 JSON error, never a 500, and the
server goes on serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer
from aiortc import VideoStreamTrack

from server import appkeys
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.conftest import StartServer
from tests.stream_client import Client

SILENCE = np.zeros(48000, np.float32)


def offer_url(server: TestServer) -> str:
    return str(server.make_url("/api/v3/webrtc/offer"))


async def post(http: aiohttp.ClientSession, server: TestServer, body: Any, raw: bool = False
               ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    kwargs: dict[str, Any] = {"data": body} if raw else {"json": body}
    async with http.post(offer_url(server), **kwargs) as response:
        return response.status, await response.json(), response


def drop_lines(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


async def test_bad_offers_are_refused_with_400(server: TestServer, http: aiohttp.ClientSession) -> None:
    client = WebRtcClient.offerer(ArrayTrack(SILENCE))
    good = await client.offer_sdp()
    video = WebRtcClient.offerer(ArrayTrack(SILENCE))
    video.pc.addTrack(VideoStreamTrack())
    no_track = WebRtcClient.offerer(None)
    two_tracks = WebRtcClient.offerer(ArrayTrack(SILENCE))
    two_tracks.pc.addTrack(ArrayTrack(SILENCE))
    cases: list[tuple[Any, bool, str]] = [
        (b"{not json", True, "bad_json"),
        ([1, 2], False, "bad_request"),
        ({"sdp": good}, False, "bad_request"),  # no type
        ({"sdp": good, "type": "answer"}, False, "bad_request"),
        ({"sdp": good, "type": "offer", "extra": 1}, False, "bad_request"),
        ({"type": "offer"}, False, "bad_sdp"),
        ({"sdp": 42, "type": "offer"}, False, "bad_sdp"),
        ({"sdp": "hello", "type": "offer"}, False, "bad_sdp"),  # not SDP: no v= line
        ({"sdp": good[: len(good) // 2], "type": "offer"}, False, "bad_sdp"),
        ({"sdp": drop_lines(good, "a=ice-ufrag"), "type": "offer"}, False, "bad_sdp"),
        ({"sdp": drop_lines(good, "a=fingerprint"), "type": "offer"}, False, "bad_sdp"),
        ({"sdp": drop_lines(good, "a=rtpmap"), "type": "offer"}, False, "bad_sdp"),
        ({"sdp": "x" * 70000, "type": "offer"}, False, "bad_sdp"),
        ({"sdp": await no_track.offer_sdp(), "type": "offer"}, False, "no_audio_track"),
        ({"sdp": await video.offer_sdp(), "type": "offer"}, False, "unsupported_media"),
        ({"sdp": await two_tracks.offer_sdp(), "type": "offer"}, False, "too_many_tracks"),
        ({"sdp": good, "type": "offer", "settings": [1]}, False, "bad_settings"),
        ({"sdp": good, "type": "offer", "settings": {"threshold": "high"}}, False, "bad_settings"),
        ({"sdp": good, "type": "offer", "settings": {"no_such_setting": 1}}, False, "bad_settings"),
    ]
    try:
        for body, raw, code in cases:
            status, answer, _ = await post(http, server, body, raw)
            assert status == 400 and answer["error"]["code"] == code, (body, answer)
            assert answer["error"]["message"]
        assert len(server.app[appkeys.WEBRTC].peers) == 0  # refused offers leave nothing behind
        assert len(server.app[appkeys.STREAMS].registry) == 0
        status, answer, _ = await post(http, server, {"sdp": good, "type": "offer"})
        assert status == 200 and answer["stream_id"]  # and the server still serves
    finally:
        for peer in (client, video, no_track, two_tracks):
            await peer.close()


async def test_max_streams_is_shared_with_websocket_streams(start_server: StartServer,
                                                            http: aiohttp.ClientSession) -> None:
    server = await start_server(max_streams=2)
    publisher = await Client.connect(http, server, "/api/v3/stream")
    await publisher.send({"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le"})
    assert (await publisher.receive())["type"] == "started"
    first = WebRtcClient.offerer(ArrayTrack(SILENCE))
    second = WebRtcClient.offerer(ArrayTrack(SILENCE))
    third = WebRtcClient.offerer(ArrayTrack(SILENCE))
    try:
        await first.connect(http, str(server.make_url("")).rstrip("/"))
        body = {"sdp": await second.offer_sdp(), "type": "offer"}
        status, answer, response = await post(http, server, body)
        assert status == 503 and answer["error"]["code"] == "server_full"
        assert int(response.headers["Retry-After"]) > 0
        await first.close()  # the client hangs up: its place is free again
        for _ in range(200):
            if len(server.app[appkeys.STREAMS].registry) < 2:
                break
            await asyncio.sleep(0.05)
        status, answer, _ = await post(http, server, {"sdp": await third.offer_sdp(), "type": "offer"})
        assert status == 200, answer
    finally:
        for peer in (first, second, third):
            await peer.close()
        await publisher.ws.close()


async def test_without_an_events_channel(server: TestServer, http: aiohttp.ClientSession) -> None:
    """No ``events`` channel: the stream still runs (its events reach subscribers); a channel with another
    label is closed by the server."""
    client = WebRtcClient.offerer(ArrayTrack(SILENCE), data_channel=False)
    other = client.pc.createDataChannel("chat")
    closed = asyncio.Event()
    other.on("close", closed.set)
    try:
        await client.connect(http, str(server.make_url("")).rstrip("/"))
        assert client.answer["data_channel"] is True  # the "chat" channel made one
        await asyncio.wait_for(closed.wait(), 30)
        listing = await (await http.get(server.make_url("/api/v3/streams"))).json()
        assert [s["stream_id"] for s in listing["streams"]] == [client.stream_id]
        subscriber = await http.ws_connect(server.make_url(f"/api/v3/streams/{client.stream_id}/events"))
        kinds = set()
        while "status" not in kinds:
            kinds.add(json.loads((await subscriber.receive(timeout=30)).data)["type"])
        await subscriber.close()
        bare = WebRtcClient.offerer(ArrayTrack(SILENCE), data_channel=False)
        try:
            status, answer, _ = await post(http, server, {"sdp": await bare.offer_sdp(), "type": "offer"})
            assert status == 200 and answer["data_channel"] is False
        finally:
            await bare.close()
    finally:
        await client.close()
