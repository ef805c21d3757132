"""A Redis outage and recovery, with a real redis-server stopped or killed by its pid mid-run and restarted
on the same port and directory (append-only file), under in-process servers in Redis mode.

While Redis is down the file API answers 503 ``storage_unavailable`` with ``Retry-After`` (the WebSocket
upload: ``storage_unavailable`` and close 1013), live streams of the instance go on for their publisher and
its local subscribers, and subscribers of other instances' streams get a documented refusal or ``ended``.
Once Redis is back everything recovers without a restart. No request gets a 500, and the outage is logged
once per instance (one warning, one info), without tracebacks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

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
from tests.conftest import StartServer
from tests.polling import until
from tests.redis_server import RedisServer
from tests.stream_client import Client, Publisher, of_type, onset_times
from tests.test_redis_workers import long_clicks
from tests.test_upload_ws import UploadClient

pytestmark = pytest.mark.redis

WAIT_S = 60.0  # generous: a loaded 2-core machine, and the client's own retries (a few seconds)
SAMPLE_RATE = 16000
STREAM_TTL_S = 2.0
LONG_FILE_MINUTES = 20  # several seconds of analysis: long enough to lose Redis part-way


async def fetch(http: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or text)."""
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, dict(resp.headers), body


def form(data: bytes) -> aiohttp.FormData:
    payload = aiohttp.FormData()
    payload.add_field("file", io.BytesIO(data), filename="a.wav", content_type="application/octet-stream")
    return payload


def assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503, body
    assert body["error"]["code"] == "storage_unavailable" and "Redis" in body["error"]["message"], body
    assert int(headers["Retry-After"]) > 0


async def ready(http: aiohttp.ClientSession, server: TestServer) -> bool:
    status, _, _ = await fetch(http, "GET", str(server.make_url("/readyz")))
    return status == 200


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def check_outage_logs(caplog: pytest.LogCaptureFixture, instances: int) -> None:
    """Each instance logged the outage once (a warning) and the recovery once (an info); nothing in the
    scale-out code warned otherwise; no error and no traceback anywhere."""
    records = caplog.records
    faults = [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not faults
    warned = [r for r in records if r.name.startswith("server.scale") and r.levelno >= logging.WARNING]
    assert [r.name for r in warned] == ["server.scale.availability"] * instances, \
        [r.getMessage() for r in warned]
    assert all("cannot be reached" in r.getMessage() for r in warned)
    recovered = [r for r in records if r.name == "server.scale.availability" and r.levelno == logging.INFO]
    assert len(recovered) == instances and all("answers again" in r.getMessage() for r in recovered)


async def test_the_file_api_answers_503_through_an_outage_and_recovers(
        redis_server: RedisServer, start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server(redis=redis_server.url, workers=1)
    base = base_url(server)
    uploads = tmp_path / "data" / "uploads"
    made = make_file(tmp_path, "wav", duration_s=4.0, seed=21)
    data = made.path.read_bytes()
    small = make_file(tmp_path, "wav", duration_s=1.0, seed=22).path.read_bytes()
    status, posted = await post_file(http, base, made.path)
    assert status == 202, posted
    before = await wait_finished(http, base, posted["task_id"])
    samples, rate = decode_whole(made.path)
    expected = [{"time": o.time, "strength": o.strength} for o in detect_onsets(samples, rate)]
    assert before["status"] == "success", before
    assert times_and_strengths(before["result"]["onsets"]) == expected
    # A WebSocket upload half-way through when Redis goes away.
    interrupted = await UploadClient.connect(http, server)
    await interrupted.send({"type": "upload", "filename": "cut.wav", "size": len(data)})
    cut = await interrupted.receive()
    assert cut["type"] == "accepted", cut
    await interrupted.send_data(data[: len(data) // 2])

    redis_server.stop()  # SIGTERM by pid
    for _ in range(2):  # the first request meets the outage, the next one is refused at once
        assert_unavailable(*await fetch(http, "POST", base + "/api/v3/analysis", data=form(small)))
        assert_unavailable(*await fetch(http, "GET", f"{base}/api/v3/analysis/{posted['task_id']}"))
    status, _, readiness = await fetch(http, "GET", base + "/readyz")
    assert status == 503 and any("job store" in problem for problem in readiness["problems"]), readiness
    status, _, metrics = await fetch(http, "GET", base + "/metrics")
    assert status == 200 and "transient_pool_workers 1.0" in metrics
    assert "transient_jobs{" not in metrics  # unknown while the store cannot be reached: left out

    refused = await UploadClient.connect(http, server)
    await refused.send({"type": "upload", "filename": "later.wav", "size": len(data)})
    error, closed = await refused.receive(), await refused.receive()
    assert error["type"] == "error" and error["code"] == "storage_unavailable", error
    assert closed == {"type": "<closed>", "code": 1013}
    await interrupted.send_data(data[len(data) // 2 :])
    await interrupted.send({"type": "end"})
    rest = await interrupted.until_closed()
    assert rest[-1] == {"type": "<closed>", "code": 1013}, rest
    assert rest[-2]["type"] == "error" and rest[-2]["code"] == "storage_unavailable", rest
    assert not list(uploads.iterdir())  # nothing refused was kept, nothing cut short either

    redis_server.start()  # same port and directory: the append-only file is read back
    await until(lambda: ready(http, server))
    status, again = await post_file(http, base, made.path)
    assert status == 202, again
    after = await wait_finished(http, base, again["task_id"])
    assert after["status"] == "success" and after["result"] == before["result"], after
    assert await get_task(http, base, posted["task_id"]) == (200, before)  # kept through the restart

    async def cut_failed() -> dict[str, Any] | None:  # recorded once Redis answers again
        status, task = await get_task(http, base, cut["task_id"])
        assert status == 200, task
        return task if task["status"] == "failed" else None

    failed = await until(cut_failed)
    assert failed["error"]["code"] == "storage_unavailable", failed
    check_outage_logs(caplog, instances=1)


async def test_a_job_running_when_redis_dies_still_finishes(
        redis_server: RedisServer, start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server(redis=redis_server.url, workers=1, redis_claim_idle_s=2.0)
    base = base_url(server)
    path = tmp_path / "long.flac"
    clicks_s = long_clicks(path, LONG_FILE_MINUTES)
    client = await UploadClient.connect(http, server)
    accepted, _ = await client.upload(path.read_bytes())
    task_id = accepted["task_id"]
    while (message := await client.receive())["type"] != "progress" or message["progress"] == 0:
        assert message["type"] in ("ack", "progress"), message  # analysing, not finished

    redis_server.kill()  # SIGKILL by pid, mid-job
    rest = await client.until_closed()
    assert rest[-1] == {"type": "<closed>", "code": 1013}, rest
    error = rest[-2]
    assert error["type"] == "error" and error["code"] == "storage_unavailable", error
    assert error["task_id"] == task_id and task_id in error["message"]  # where to look once it is back
    assert all(m["type"] == "progress" for m in rest[:-2])

    redis_server.start()
    await until(lambda: ready(http, server))
    task = await wait_finished(http, base, task_id, timeout_s=120.0, monotonic=False)
    assert task["status"] == "success", task
    assert matches([o["time"] for o in task["result"]["onsets"]], clicks_s) >= 0.99
    check_outage_logs(caplog, instances=1)


async def subscribe(http: aiohttp.ClientSession, server: TestServer, stream_id: str) -> Client:
    client = await Client.connect(http, server, f"/api/v3/streams/{stream_id}/events")
    first = await client.receive()
    assert first["type"] == "subscribed" and first["stream"]["stream_id"] == stream_id, first
    return client


async def listed(http: aiohttp.ClientSession, server: TestServer) -> list[str]:
    status, _, body = await fetch(http, "GET", str(server.make_url("/api/v3/streams")))
    assert status == 200, body
    return [entry["stream_id"] for entry in body["streams"]]


async def test_live_streams_go_on_and_remote_subscribers_are_told(
        redis_server: RedisServer, start_server: StartServer, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    options = {"redis": redis_server.url, "workers": 1, "no_worker": True, "idle_timeout_s": 0,
               "max_buffer_s": 60.0, "redis_stream_ttl_s": STREAM_TTL_S}  # no audio dropped on a busy machine
    a, b = await start_server(**options), await start_server(**options)
    signal = signals.clicks(sr=SAMPLE_RATE, duration_s=9.0)
    samples = signal.samples.astype(np.float32)
    thirds = np.array_split(samples, 3)
    publisher = await Publisher.open(http, a)
    stream_id = (await publisher.start(SAMPLE_RATE))["stream_id"]
    await until(lambda: _has(listed(http, b), stream_id))
    local, remote = await subscribe(http, a, stream_id), await subscribe(http, b, stream_id)
    await publisher.stream(thirds[0], SAMPLE_RATE)

    redis_server.kill()  # SIGKILL by pid, mid-stream
    await publisher.stream(thirds[1], SAMPLE_RATE)  # the stream goes on
    refused = await Client.connect(http, b, f"/api/v3/streams/{stream_id}/events")
    error, closed = await refused.receive(), await refused.receive()
    assert error["type"] == "error" and error["code"] == "storage_unavailable", error
    assert closed == {"type": "<closed>", "code": 1013}
    joined_during = await subscribe(http, a, stream_id)  # a local subscriber needs no Redis
    assert await listed(http, a) == [stream_id] and await listed(http, b) == []  # each its own only
    seen_remote = await remote.receive_all()  # ended once the outage outlasted the streams' TTL
    assert seen_remote[-1] == {"type": "<closed>", "code": 1000}, seen_remote[-3:]
    ended = seen_remote[-2]
    assert ended["type"] == "ended" and ended["reason"] == "storage_unavailable", ended

    redis_server.start()
    await until(lambda: _has(listed(http, b), stream_id))  # A lists it again, B sees it
    joined_after = await subscribe(http, b, stream_id)
    await publisher.stream(thirds[2], SAMPLE_RATE)
    published = await publisher.stop()
    seen_local, seen_during, seen_after = (await local.receive_all(), await joined_during.receive_all(),
                                           await joined_after.receive_all())

    onsets = onset_times(published)
    assert matches(onsets, signal.onsets_s) >= 0.9  # the publisher got every onset through the outage
    assert onset_times(seen_local) == onsets  # so did the subscriber on its instance
    during = onset_times(seen_during)
    assert during and during == onsets[len(onsets) - len(during):]
    after = onset_times(seen_after)  # at most once across instances: what was published after joining
    assert after and after == onsets[len(onsets) - len(after):]
    assert all(t >= len(thirds[0]) / SAMPLE_RATE for t in after)
    assert onset_times(seen_remote) == onsets[: len(onset_times(seen_remote))]
    for seen in (seen_local, seen_during, seen_after):
        assert seen[-2]["type"] == "ended" and seen[-2]["reason"] == "stopped", seen[-2]
        assert seen[-1] == {"type": "<closed>", "code": 1000}
    assert of_type(published, "stopped")
    check_outage_logs(caplog, instances=2)


async def _has(listing: Awaitable[list[str]], stream_id: str) -> bool:
    return stream_id in await listing
