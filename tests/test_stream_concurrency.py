"""Many streams and subscribers at once through one real server: nothing mixed up, nothing lost."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer

from server.dsp import detect_onsets
from testkit import signals
from tests.conftest import StartServer
from tests.stream_client import Client, Publisher, of_type, onset_times, until_listed

STREAMS = 20
SUBSCRIBERS_PER_STREAM = 2


async def run_stream(http: aiohttp.ClientSession, server: TestServer, index: int,
                     ready: asyncio.Barrier) -> tuple[list[float], list[float], list[list[dict[str, Any]]]]:
    sample_rate = (16000, 22050, 44100, 48000)[index % 4]
    codec = ("json", "msgpack")[index % 2]
    signal = signals.drums(sr=sample_rate, duration_s=1.5, seed=100 + index)
    publisher = await Publisher.open(http, server, codec)
    stream_id = (await publisher.start(sample_rate))["stream_id"]
    watchers = []
    for k in range(SUBSCRIBERS_PER_STREAM):
        watcher = await Client.connect(http, server, f"/api/v3/streams/{stream_id}/events",
                                       ("msgpack", "json")[(index + k) % 2])
        assert (await watcher.receive())["type"] == "subscribed"
        watchers.append(watcher)
    watched = [asyncio.create_task(w.receive_all()) for w in watchers]
    await ready.wait()  # every stream is live before any audio flows
    await publisher.stream(signal.samples, sample_rate, chunk_s=0.02, pace=0.05)
    published = await publisher.stop()
    want = [onset.time for onset in detect_onsets(signal.samples, sample_rate)]
    return want, onset_times(published), [await task for task in watched]


async def test_twenty_streams_with_two_subscribers_each(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_buffer_s=30.0)
    ready = asyncio.Barrier(STREAMS + 1)
    tasks = [asyncio.create_task(run_stream(http, server, i, ready)) for i in range(STREAMS)]
    await until_listed(http, server, STREAMS)
    await ready.wait()
    results = await asyncio.gather(*tasks)
    for want, got, watched in results:
        assert len(want) > 3
        assert len(got) == len(want)
        assert np.max(np.abs(np.array(got) - np.array(want))) <= 0.001
        for messages in watched:
            assert onset_times(messages) == got
            assert not of_type(messages, "overflow")
            assert messages[-2]["type"] == "ended"
    await until_listed(http, server, 0)
