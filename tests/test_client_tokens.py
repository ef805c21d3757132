"""The asyncio client against a real server with access tokens: every call presents the token in a header."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from yarl import URL

from server.client import TOKEN_ENV, ClientError, TransientClient
from server.client.auth import normalise_token
from server.dsp import detect_onsets
from testkit import signals
from tests.conftest import StartServer

TOKENS = "pub:publisher-secret-1:publish;sub:subscriber-secret-2:subscribe;files:analyser-secret-3:analyse;" \
         "all:all-rights-secret-4:publish,subscribe,analyse"
PUB, SUB, FILES, ALL = "publisher-secret-1", "subscriber-secret-2", "analyser-secret-3", "all-rights-secret-4"
SECRETS = (PUB, SUB, FILES, ALL, "not-a-known-token")
TOLERANCE_S = 0.001
CHUNK_S = 0.02


@pytest.fixture
async def guarded(start_server: StartServer) -> TestServer:
    return await start_server(tokens=TOKENS)


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def assert_close(got: list[float], want: list[float]) -> None:
    assert len(want) >= 4 and len(got) == len(want), (got, want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


Sent = list[tuple[str, str, str | None]]  # method, URL, Authorization header


def recording_session(sent: Sent) -> aiohttp.ClientSession:
    """A session noting each request it sends, WebSocket handshakes included (aiohttp's request tracing)."""

    async def on_start(session: aiohttp.ClientSession, context: Any,
                       params: aiohttp.TraceRequestStartParams) -> None:
        sent.append((params.method, str(params.url), params.headers.get("Authorization")))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace])


async def _watch(subscription: Any) -> list[dict[str, Any]]:
    return [event async for event in subscription]


async def test_publish_subscribe_list_and_analyse_with_tokens(guarded: TestServer, tmp_path: Path) -> None:
    sample_rate = 16000
    clicks = signals.clicks(sr=sample_rate, duration_s=2.0, seed=8).samples
    url = base_url(guarded)
    sent: Sent = []
    # One shared session, three clients with different tokens: the token travels with each request.
    async with recording_session(sent) as http, \
            TransientClient(url, session=http, token=PUB) as rig, \
            TransientClient(url, session=http, token=SUB) as wall, \
            TransientClient(url, session=http, token=FILES) as desk:
        publisher = await rig.publish(sample_rate)
        assert [s["stream_id"] for s in await wall.streams()] == [publisher.stream_id]
        subscription = await wall.subscribe(publisher.stream_id)
        watched = asyncio.create_task(_watch(subscription))
        step = round(CHUNK_S * sample_rate)
        for i in range(0, len(clicks), step):
            await publisher.send_audio(clicks[i:i + step])
        stopped = await publisher.stop()
        seen = await watched

        path = tmp_path / "drums.wav"
        drums = signals.drums(sr=22050, duration_s=2.0, seed=13).samples
        sf.write(path, drums, 22050, subtype="FLOAT")
        over_http = await desk.analyse(path)
        over_ws = await desk.upload(path)

    want = [o.time for o in detect_onsets(clicks, sample_rate)]
    assert_close([e["time"] for e in seen if e["type"] == "onset"], want)
    assert seen[-1]["type"] == "ended" and seen[-1]["onsets"] == stopped["onsets"] == len(want)
    assert over_http == over_ws
    assert_close([o["time"] for o in over_http["onsets"]], [o.time for o in detect_onsets(drums, 22050)])
    # Every request, WebSocket handshakes included, carried its client's token in the header, not the URL.
    owner = {"stream": PUB, "streams": SUB, "analysis": FILES, "upload": FILES}
    for _, sent_url, authorization in sent:
        path = URL(sent_url).path
        assert authorization == f"Bearer {owner[path.split('/')[3]]}", path
        assert "token" not in sent_url.lower() and not any(secret in sent_url for secret in SECRETS)
    assert {URL(u).path for _, u, _ in sent} >= {"/api/v3/stream", "/api/v3/streams", "/api/v3/analysis",
                                                 f"/api/v3/streams/{publisher.stream_id}/events",
                                                 "/api/v3/upload"}


async def test_refused_tokens_raise_client_errors_with_the_servers_reason(
    guarded: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = base_url(guarded)
    path = tmp_path / "short.wav"
    sf.write(path, signals.clicks(sr=16000, duration_s=0.5, seed=3).samples, 16000)
    async with TransientClient(url, session=http, token=ALL) as owner:
        publisher = await owner.publish(16000)
        refusals: list[tuple[str, Any]] = [
            (SUB, lambda c: c.publish(16000)),  # WebSocket handshake
            (PUB, lambda c: c.subscribe(publisher.stream_id)),  # WebSocket handshake
            (PUB, lambda c: c.streams()),  # HTTP
            (SUB, lambda c: c.analyse(path)),  # HTTP upload
            (PUB, lambda c: c.upload(path)),  # WebSocket handshake
        ]
        for token, call in refusals:
            async with TransientClient(url, session=http, token=token) as client:
                with pytest.raises(ClientError) as info:
                    await call(client)
            assert (info.value.code, info.value.status) == ("forbidden", 403), info.value
            assert "lacks the right" in info.value.message and token not in str(info.value)
        async with TransientClient(url, session=http, token="not-a-known-token") as stranger:
            for call in (lambda c: c.publish(16000), lambda c: c.streams()):
                with pytest.raises(ClientError) as info:
                    await call(stranger)
                assert (info.value.code, info.value.status) == ("unauthorized", 401)
                assert info.value.message == "unknown token"
        await publisher.stop()


async def test_the_token_comes_from_the_environment_unless_given(
    guarded: TestServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"  {PUB}\n")  # surrounding whitespace (a file's newline) is dropped
    async with TransientClient(base_url(guarded), session=http) as client:
        assert client.token == PUB
        publisher = await client.publish(16000)
        await publisher.send_audio(np.zeros(1600, dtype=np.float32))
        assert (await publisher.stop())["type"] == "stopped"
    async with TransientClient(base_url(guarded), session=http, token="") as anonymous:
        with pytest.raises(ClientError) as info:
            await anonymous.publish(16000)
        assert (info.value.code, info.value.status) == ("unauthorized", 401)
        assert "needs a token" in info.value.message


@pytest.mark.parametrize("bad", ["with space-inside", "tab\there-1234", "line\nbreak-1234", "nön-ascii-1234"])
def test_a_token_that_cannot_travel_in_a_header_is_refused_before_sending(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_token(bad)
    assert bad not in str(info.value)
    with pytest.raises(ValueError):
        TransientClient("http://127.0.0.1:1", token=bad)
