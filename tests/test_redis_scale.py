"""Several instances on one real Redis: live streams fan out across instances, file jobs are shared.

One module-wide set of processes, all ``run.py`` on the same Redis and the same shared data directory:
instances A and B (serving only), instance C (serving only, 1 s stream TTL: the one that crashes) and a
worker W (no HTTP) that runs every file job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from yarl import URL

from server.dsp import detect_onsets
from testkit import signals
from tests.analysis_files import (
    decode_whole,
    get_task,
    make_file,
    matches,
    post_file,
    times_and_strengths,
    wait_finished,
)
from tests.redis_server import RedisServer, RunPy, instance, worker
from tests.stream_client import Client, Publisher, of_type, onset_times
from tests.test_upload_ws import UploadClient

pytestmark = pytest.mark.redis

SAMPLE_RATE = 16000
WAIT_S = 30.0  # generous: the suite may run on a loaded 2-core machine


class Remote:
    """A ``run.py`` instance addressed like the in-process test server (``make_url``)."""

    def __init__(self, proc: RunPy) -> None:
        self.proc = proc
        self.url = proc.url

    def make_url(self, path: str) -> URL:
        return URL(self.url + path)


@dataclass
class Cluster:
    a: Remote
    b: Remote
    c: Remote
    worker: RunPy
    data_dir: Path


@pytest.fixture(scope="module")
def cluster(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    url = module_redis.url
    procs = [instance(url, data_dir, "--no-worker"), instance(url, data_dir, "--no-worker"),
             instance(url, data_dir, "--no-worker", "--redis-stream-ttl-s", "1"), worker(url, data_dir)]
    try:
        for proc in procs:  # started together, waited for in turn
            proc.ready()
        yield Cluster(Remote(procs[0]), Remote(procs[1]), Remote(procs[2]), procs[3], data_dir)
    finally:
        for proc in procs:
            proc.stop()


async def listing(http: aiohttp.ClientSession, server: Remote) -> dict[str, dict[str, Any]]:
    async with http.get(server.make_url("/api/v3/streams")) as resp:
        assert resp.status == 200
        return {entry["stream_id"]: entry for entry in (await resp.json())["streams"]}


async def until_listing(http: aiohttp.ClientSession, server: Remote, stream_id: str, *, present: bool,
                        subscribers: int | None = None) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        streams = await listing(http, server)
        entry = streams.get(stream_id)
        if (entry is not None) == present and (subscribers is None or (entry or {}).get("subscribers")
                                                == subscribers):
            return streams
        state = "listed" if present else "gone"
        assert time.monotonic() < deadline, f"stream {stream_id} never {state}: {streams}"
        await asyncio.sleep(0.05)


async def subscribe(http: aiohttp.ClientSession, server: Remote, stream_id: str,
                    codec: str = "json") -> Client:
    client = await Client.connect(http, server, f"/api/v3/streams/{stream_id}/events", codec)
    first = await client.receive()
    assert first["type"] == "subscribed" and first["stream"]["stream_id"] == stream_id, first
    return client


async def test_a_subscriber_on_b_receives_a_stream_published_on_a(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    signal = signals.clicks(sr=SAMPLE_RATE, duration_s=4.0)
    async with aiohttp.ClientSession() as http:
        publisher = await Publisher.open(http, a)
        stream_id = (await publisher.start(SAMPLE_RATE))["stream_id"]
        entry = (await until_listing(http, b, stream_id, present=True))[stream_id]
        assert entry["sample_rate"] == SAMPLE_RATE and entry["state"] == "running"
        assert entry["instance"] == (await listing(http, a))[stream_id]["instance"]  # runs on A
        on_b = await subscribe(http, b, stream_id)
        on_a = await subscribe(http, a, stream_id, codec="msgpack")
        await until_listing(http, a, stream_id, present=True, subscribers=2)  # counted on every instance
        await until_listing(http, b, stream_id, present=True, subscribers=2)
        await publisher.stream(signal.samples.astype(np.float32), SAMPLE_RATE)
        published = await publisher.stop()
        seen_on_b, seen_on_a = await on_b.receive_all(), await on_a.receive_all()
        await until_listing(http, a, stream_id, present=False)
        await until_listing(http, b, stream_id, present=False)
    onsets = onset_times(published)
    assert matches(onsets, signal.onsets_s) >= 0.9
    assert onset_times(seen_on_b) == onsets and onset_times(seen_on_a) == onsets  # no outage: every event
    assert of_type(seen_on_b, "status") and of_type(seen_on_b, "status") == of_type(seen_on_a, "status")
    for seen in (seen_on_b, seen_on_a):
        assert seen[-1]["type"] == "<closed>" and seen[-1]["code"] == 1000
        ended = seen[-2]
        assert ended["type"] == "ended" and ended["reason"] == "stopped" and ended["onsets"] == len(onsets)


async def test_an_unknown_stream_is_refused_on_any_instance(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        client = await Client.connect(http, cluster.b, "/api/v3/streams/no-such-stream/events")
        error, closed = await client.receive(), await client.receive()
    assert error["type"] == "error" and error["code"] == "unknown_stream"
    assert closed == {"type": "<closed>", "code": 1008}


async def test_a_crashed_instances_streams_expire_everywhere(cluster: Cluster) -> None:
    b, c = cluster.b, cluster.c
    signal = signals.clicks(sr=SAMPLE_RATE, duration_s=1.0)
    async with aiohttp.ClientSession() as http:
        publisher = await Publisher.open(http, c)
        stream_id = (await publisher.start(SAMPLE_RATE))["stream_id"]
        await until_listing(http, b, stream_id, present=True)
        watcher = await subscribe(http, b, stream_id)
        await publisher.stream(signal.samples.astype(np.float32), SAMPLE_RATE)
        await until_listing(http, b, stream_id, present=True)
        c.proc.kill()  # SIGKILL: the stream is never withdrawn, only no longer refreshed
        await until_listing(http, cluster.a, stream_id, present=False)
        await until_listing(http, b, stream_id, present=False)
        seen = await watcher.receive_all()
        await publisher.close()
    ended = seen[-2]
    assert ended["type"] == "ended" and ended["stream_id"] == stream_id and ended["reason"] == "expired"
    assert seen[-1] == {"type": "<closed>", "code": 1000}


async def test_a_job_submitted_on_a_is_answered_on_b(cluster: Cluster, tmp_path: Path) -> None:
    made = make_file(tmp_path, "wav", duration_s=8.0, seed=11)
    async with aiohttp.ClientSession() as http:
        status, body = await post_file(http, cluster.a.url, made.path, filename="drums.wav")
        assert status == 202, body
        task = await wait_finished(http, cluster.b.url, body["task_id"])
        again = await get_task(http, cluster.a.url, body["task_id"])
    assert task["status"] == "success", task
    assert again == (200, task)
    samples, rate = decode_whole(made.path)
    expected = [{"time": o.time, "strength": o.strength} for o in detect_onsets(samples, rate)]
    assert times_and_strengths(task["result"]["onsets"]) == expected
    assert not list((cluster.data_dir / "uploads").glob(f"{body['task_id']}.*"))  # deleted once analysed


async def test_a_websocket_upload_on_b_follows_the_worker(cluster: Cluster, tmp_path: Path) -> None:
    made = make_file(tmp_path, "flac", duration_s=90.0, seed=12, channels=1)
    data = made.path.read_bytes()
    async with aiohttp.ClientSession() as http:
        client = await UploadClient.connect(http, cluster.b)
        accepted, _ = await client.upload(data)
        rest = await client.until_closed()
        over_http = await get_task(http, cluster.a.url, accepted["task_id"])
    assert rest[-1] == {"type": "<closed>", "code": 1000}
    result = rest[-2]
    assert result["type"] == "result" and result["task_id"] == accepted["task_id"]
    progress = [m["progress"] for m in rest if m["type"] == "progress"]
    assert progress and progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    assert over_http[0] == 200 and over_http[1]["result"] == result["result"]
    samples, rate = decode_whole(made.path)
    expected = [{"time": o.time, "strength": o.strength} for o in detect_onsets(samples, rate)]
    assert times_and_strengths(result["result"]["onsets"]) == expected
