"""The asyncio client against a real server: publish, configure, stop, subscribe, list, refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from server.client import ClientError, Pacer, Publisher, TransientClient, default_server
from server.dsp import DetectorSettings, OnsetDetector, detect_onsets
from testkit import signals
from tests.conftest import StartServer

CHUNK_S = 0.02
TOLERANCE_S = 0.001


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def send_all(publisher: Publisher, samples: np.ndarray, sample_rate: int) -> None:
    step = round(CHUNK_S * sample_rate)
    for i in range(0, len(samples), step):
        await publisher.send_audio(samples[i:i + step])


async def collect(publisher: Publisher) -> list[dict[str, Any]]:
    return [event async for event in publisher.events()]


@pytest.mark.parametrize(("codec", "encoding"), [("json", "pcm_f32le"), ("msgpack", "pcm_s16le")])
async def test_publish_subscribe_and_list(
    start_server: StartServer, http: aiohttp.ClientSession, codec: str, encoding: str
) -> None:
    server = await start_server()
    sample_rate = 22050
    signal = signals.drums(sr=sample_rate, duration_s=2.5, seed=4)
    async with TransientClient(base_url(server), session=http, codec=codec) as client:
        publisher = await client.publish(sample_rate, encoding=encoding, settings={"threshold": 1.5})
        assert publisher.settings["threshold"] == 1.5 and publisher.started["encoding"] == encoding
        listed = await client.streams()
        assert [s["stream_id"] for s in listed] == [publisher.stream_id]
        subscription = await client.subscribe(publisher.stream_id)
        assert subscription.stream["stream_id"] == publisher.stream_id
        received = asyncio.create_task(collect(publisher))
        watched = asyncio.create_task(_watch(subscription))

        await send_all(publisher, signal.samples[: len(signal.samples) // 2], sample_rate)
        settings = await publisher.configure({"min_interval_ms": 40})
        assert settings["min_interval_ms"] == 40 and settings["threshold"] == 1.5
        with pytest.raises(ClientError) as refused:
            await publisher.configure({"threshold": -3})
        assert refused.value.code == "bad_settings" and "threshold" in refused.value.message
        assert publisher.settings["min_interval_ms"] == 40  # the refused change left the settings alone
        await send_all(publisher, signal.samples[len(signal.samples) // 2:], sample_rate)
        stopped = await publisher.stop()
        events, seen = await received, await watched
        assert await client.streams() == []

    assert stopped["type"] == "stopped"
    assert stopped["duration"] == pytest.approx(len(signal.samples) / sample_rate, abs=1e-6)
    onsets = [e for e in events if e["type"] == "onset"]
    assert stopped["onsets"] == len(onsets) >= 4
    pcm = signal.samples if encoding == "pcm_f32le" else np.round(
        np.clip(signal.samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    half = len(pcm) // 2
    first = DetectorSettings.from_mapping({"threshold": 1.5})
    detector = OnsetDetector(sample_rate, 1, first)
    want = detector.process(pcm[:half])
    detector.configure(DetectorSettings.from_mapping({"min_interval_ms": 40}, base=first))
    want += detector.process(pcm[half:]) + detector.flush()
    assert len(onsets) == len(want)
    assert np.max(np.abs(np.array([e["time"] for e in onsets]) - [o.time for o in want])) <= TOLERANCE_S
    assert all(isinstance(e["wall_time"], float) for e in onsets)
    assert [e["type"] for e in events].count("configured") == 1
    assert [e["code"] for e in events if e["type"] == "error"] == ["bad_settings"]
    assert events[-1]["type"] == "stopped"
    watched_onsets = [e for e in seen if e["type"] == "onset"]
    assert watched_onsets == onsets
    assert seen[-1]["type"] == "ended" and seen[-1]["onsets"] == len(onsets)
    assert subscription.ended == seen[-1]


async def _watch(subscription: Any) -> list[dict[str, Any]]:
    return [event async for event in subscription]


async def test_onsets_through_the_client_equal_the_detector(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate = 16000
    signal = signals.clicks(sr=sample_rate, duration_s=2.0, seed=8)
    async with TransientClient(base_url(server), session=http) as client:
        publisher = await client.publish(sample_rate)
        received = asyncio.create_task(collect(publisher))
        await send_all(publisher, signal.samples, sample_rate)
        await publisher.stop()
        events = await received
    got = [e["time"] for e in events if e["type"] == "onset"]
    want = [o.time for o in detect_onsets(signal.samples, sample_rate)]
    assert len(want) >= 4 and len(got) == len(want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


async def test_refusals_raise_client_errors(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(max_streams=1)
    async with TransientClient(base_url(server), session=http) as client:
        with pytest.raises(ClientError) as info:
            await client.publish(16000, settings={"method": "magic"})
        assert (info.value.code, info.value.close_code) == ("bad_settings", 1007)
        with pytest.raises(ClientError) as info:
            await client.publish(1000)
        assert (info.value.code, info.value.close_code) == ("unsupported_format", 1003)
        with pytest.raises(ClientError) as info:
            await client.subscribe("no-such-stream")
        assert (info.value.code, info.value.close_code) == ("unknown_stream", 1008)

        first = await client.publish(16000)
        with pytest.raises(ClientError) as info:
            await client.publish(16000)
        assert (info.value.code, info.value.close_code) == ("server_full", 1013)
        await first.close()  # a dropped connection: the stream ends, stop() now reports the close
        with pytest.raises(ClientError) as info:
            await first.stop()
        assert info.value.code == "closed"

    async with TransientClient(base_url(server), session=http, codec="cbor") as client:
        with pytest.raises(ValueError, match="unknown codec"):
            await client.publish(16000)


async def test_a_stream_ended_by_the_server_ends_the_events_with_its_error(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(idle_timeout_s=0.3)
    async with TransientClient(base_url(server), session=http) as client:
        publisher = await client.publish(16000)
        events = await asyncio.wait_for(collect(publisher), 30)
        assert [e["code"] for e in events if e["type"] == "error"] == ["idle_timeout"]
        with pytest.raises(ClientError) as info:
            await publisher.stop()
        assert (info.value.code, info.value.close_code) == ("idle_timeout", 1008)
        with pytest.raises(ClientError):
            await publisher.send_audio(np.zeros(160, dtype=np.float32))


async def test_pacer_keeps_real_time() -> None:
    pacer = Pacer(1000, speed=2.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for frames in (0, 100, 200, 300):
        await pacer.wait(frames)
    assert loop.time() - start >= 0.149  # 300 frames at 1 kHz, twice real time
    assert pacer.due_s(1000) == 0.5


def test_server_address_from_the_environment() -> None:
    assert default_server({"TRANSIENT_SERVER": "http://10.0.0.2:9000"}) == "http://10.0.0.2:9000"
    assert default_server({}) == "http://127.0.0.1:8080"


async def test_one_client_holds_more_streams_than_aiohttps_default_connection_limit(
    start_server: StartServer,
) -> None:
    """A client's own session must not cap its streams: aiohttp's default connector holds at most 100
    connections, and each live stream keeps one, so the 101st publish used to wait for a free one forever."""
    streams = 104
    server = await start_server(max_streams_per_client=streams)
    async with TransientClient(base_url(server)) as client:
        publishers = [await asyncio.wait_for(client.publish(16000), 10) for _ in range(streams)]
        subscription = await asyncio.wait_for(client.subscribe(publishers[-1].stream_id), 10)
        assert len({p.stream_id for p in publishers}) == streams
        assert len(await asyncio.wait_for(client.streams(), 10)) == streams
        await subscription.close()
        await asyncio.gather(*(p.stop(10) for p in publishers))
