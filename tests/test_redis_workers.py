"""File-analysis workers on a real Redis: a worker killed mid-job loses the job to another, which finishes
it; a Redis crash and restart (append-only file) loses no queued job.

Instance A serves only (``--no-worker``); workers are ``run.py worker`` processes started per test with a
short claim time so the take-over is quick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from server.scale.client import Redis, connect
from server.scale.keys import JOB_GROUP, Keys
from testkit import signals
from tests.analysis_files import get_task, make_file, matches, post_file, wait_finished
from tests.polling import until
from tests.redis_server import RedisServer, RunPy, instance, worker

pytestmark = pytest.mark.redis

KEYS = Keys("transient")
CLAIM_IDLE_S = "1.5"
LONG_FILE_MINUTES = 10  # long enough (several seconds of analysis) to be killed part-way
TILE_S = 10.0
WAIT_S = 60.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared") / "data"


@pytest.fixture(scope="module")
def server_a(module_redis: RedisServer, data_dir: Path) -> Iterator[RunPy]:
    proc = instance(module_redis.url, data_dir, "--no-worker").ready()
    yield proc
    proc.stop()


@pytest.fixture
def workers(module_redis: RedisServer, data_dir: Path) -> Iterator[list[RunPy]]:
    """Workers a test starts (``workers.append(worker(...))``); all stopped at its end."""
    started: list[RunPy] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
async def redis(module_redis: RedisServer) -> AsyncIterator[Redis]:
    client = await connect(module_redis.url)
    yield client
    await client.aclose()


def long_clicks(path: Path, minutes: int) -> np.ndarray:
    """A FLAC of a 10 s click pattern repeated for ``minutes`` (small on disk, slow to analyse); the clicks'
    times."""
    tile = signals.clicks(sr=48000, duration_s=TILE_S)
    repeats = round(minutes * 60 / TILE_S)
    with sf.SoundFile(str(path), "w", 48000, 1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(repeats):
            out.write(tile.samples.astype(np.float32))
    return np.concatenate([tile.onsets_s + k * TILE_S for k in range(repeats)])


async def test_a_worker_killed_mid_job_loses_it_to_another(module_redis: RedisServer, server_a: RunPy,
                                                           workers: list[RunPy], data_dir: Path,
                                                           redis: Redis, tmp_path: Path) -> None:
    workers += [worker(module_redis.url, data_dir, "--redis-claim-idle-s", CLAIM_IDLE_S) for _ in range(2)]
    names = {proc.ready().value: proc for proc in workers}
    path = tmp_path / "long.flac"
    truth = long_clicks(path, LONG_FILE_MINUTES)
    async with aiohttp.ClientSession() as http:
        status, body = await post_file(http, server_a.url, path, filename="long.flac")
        assert status == 202, body
        task_id = body["task_id"]

        async def holder() -> str | None:
            pending: list[dict[str, Any]] = await redis.xpending_range(KEYS.queue, JOB_GROUP, "-", "+", 10)
            task = (await get_task(http, server_a.url, task_id))[1]
            if pending and task["status"] == "processing":
                return str(pending[0]["consumer"].decode())
            return None

        owner = await until(holder)
        victim = names[owner]
        victim.kill()  # SIGKILL mid-job: its claim is never renewed, its job never finished
        task = await wait_finished(http, server_a.url, task_id, monotonic=False)
    assert task["status"] == "success", task
    assert matches([o["time"] for o in task["result"]["onsets"]], truth) >= 0.95
    assert task["result"]["duration"] == pytest.approx(LONG_FILE_MINUTES * 60)
    assert int(await redis.hget(KEYS.job(task_id), "attempts")) == 2  # the victim's run, then the survivor's
    assert await redis.xlen(KEYS.queue) == 0
    assert not list((data_dir / "uploads").glob(f"{task_id}.*"))


async def test_a_redis_crash_loses_no_queued_job(module_redis: RedisServer, server_a: RunPy,
                                                 workers: list[RunPy], data_dir: Path,
                                                 tmp_path: Path) -> None:
    made = [make_file(tmp_path, "wav", duration_s=5.0, seed=seed) for seed in (21, 22, 23)]
    async with aiohttp.ClientSession() as http:
        task_ids = []
        for item in made:
            status, body = await post_file(http, server_a.url, item.path, filename=item.path.name)
            assert status == 202, body
            task_ids.append(body["task_id"])
        module_redis.kill()  # no worker yet: all three are queued when Redis dies
        module_redis.start()  # same port and directory: it reads the append-only file back
        for task_id in task_ids:  # instance A reconnects on its own
            pending = {"task_id": task_id, "status": "pending", "progress": 0.0}
            assert (await get_task(http, server_a.url, task_id)) == (200, pending)
        workers.append(worker(module_redis.url, data_dir).ready())
        finished = [await wait_finished(http, server_a.url, task_id) for task_id in task_ids]
    for item, task in zip(made, finished, strict=True):
        assert task["status"] == "success", task
        assert matches([o["time"] for o in task["result"]["onsets"]], item.onsets_s) >= 0.9
