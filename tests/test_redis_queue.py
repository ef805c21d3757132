"""The Redis job store and queue against a real redis-server: claims, take-overs, the delivery limit,
success stored and acknowledged together, idempotent redelivery, and queued jobs surviving a Redis crash.

A consumer that reads an entry and then goes silent is played by the test itself with a raw
``XREADGROUP`` — in Redis that is exactly what a worker killed mid-job leaves behind. (Killing real worker
processes is in test_redis_workers.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.jobs.model import Job, JobError, JobStatus
from server.scale.client import Redis, connect
from server.scale.job_queue import WORKER_LOST, RedisJobQueue
from server.scale.job_store import RedisJobStore
from server.scale.keys import JOB_GROUP, Keys
from tests.polling import until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

KEYS = Keys("t")
RETENTION_S = 3600.0


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis = await connect(redis_server.url)
    yield redis
    await redis.aclose()


@pytest.fixture
def store(client: Redis) -> RedisJobStore:
    return RedisJobStore(client, KEYS, RETENTION_S)


class Consumers:
    """Queues made by a test, closed at its end."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.made: list[RedisJobQueue] = []

    def __call__(self, name: str, claim_idle_s: float = 30.0, max_deliveries: int = 3,
                 failed: list[str] | None = None) -> RedisJobQueue:
        async def on_failed(task_id: str) -> None:
            if failed is not None:
                failed.append(task_id)

        queue = RedisJobQueue(self.client, KEYS, consumer=name, claim_idle_s=claim_idle_s,
                              max_deliveries=max_deliveries, retention_s=RETENTION_S, on_failed=on_failed)
        self.made.append(queue)
        return queue


@pytest.fixture
async def consumers(client: Redis) -> AsyncIterator[Consumers]:
    made = Consumers(client)
    yield made
    for queue in made.made:
        await queue.close()


def new_job(task_id: str) -> Job:
    now = time.time()
    return Job(task_id=task_id, status=JobStatus.PENDING, filename="a.wav", upload_path="/nowhere/a.wav",
               settings={"threshold": 1.5}, created_s=now, updated_s=now)


async def submit(store: RedisJobStore, queue: RedisJobQueue, task_id: str) -> None:
    await store.add(new_job(task_id))
    await queue.put(task_id)


async def ghost_takes(client: Redis, store: RedisJobStore) -> str:
    """Read one entry as consumer ``ghost`` and start its job, then never answer again."""
    await client.xgroup_create(KEYS.queue, JOB_GROUP, id="0", mkstream=True)
    answer: Any = await client.xreadgroup(JOB_GROUP, "ghost", {KEYS.queue: ">"}, count=1)
    fields = answer[0][1][0][1]
    task_id = fields[b"task"].decode()
    assert await store.start(task_id) is not None
    return task_id


async def pending_entries(client: Redis) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await client.xpending_range(KEYS.queue, JOB_GROUP, "-", "+", 10)
    return entries


async def test_success_is_stored_and_acknowledged_together(client: Redis, store: RedisJobStore,
                                                           consumers: Consumers) -> None:
    queue = consumers("w1")
    await submit(store, queue, "a" * 32)
    task_id = await asyncio.wait_for(queue.get(), 10)
    started = await store.start(task_id)
    assert started is not None and started.status is JobStatus.PROCESSING and started.attempts == 1
    assert len(await pending_entries(client)) == 1
    await store.succeed(task_id, '{"onsets":[1]}')
    # The same script stored the result and settled the delivery: nothing pending, the entry deleted.
    assert await pending_entries(client) == []
    assert await client.xlen(KEYS.queue) == 0
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.SUCCESS and job.result() == {"onsets": [1]}
    assert 0 < await client.ttl(KEYS.job(task_id)) <= RETENTION_S
    await queue.done(task_id)
    # Idempotent by task id: a late second outcome changes nothing, a duplicate delivery is only settled.
    await store.succeed(task_id, '{"onsets":[2]}')
    await store.fail(task_id, JobError("internal", "late"))
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.SUCCESS and job.result() == {"onsets": [1]}
    await queue.put(task_id)
    getter = asyncio.create_task(queue.get())

    async def settled() -> bool:
        return await client.xlen(KEYS.queue) == 0 and await pending_entries(client) == []

    await until(settled)
    assert not getter.done()  # the duplicate was acknowledged, not handed out
    getter.cancel()


async def test_a_live_worker_keeps_its_claim(client: Redis, store: RedisJobStore,
                                             consumers: Consumers) -> None:
    claim_idle_s = 0.4
    busy, idle = consumers("busy", claim_idle_s), consumers("idle", claim_idle_s)
    await submit(store, busy, "b" * 32)
    task_id = await asyncio.wait_for(busy.get(), 10)
    assert await store.start(task_id) is not None
    # Four claim times pass while `busy` works on it; `idle` keeps trying to take over idle entries.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(idle.get(), 4 * claim_idle_s)
    [entry] = await pending_entries(client)
    assert entry["consumer"] == b"busy" and entry["times_delivered"] == 1
    assert idle.taken_over == 0
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.PROCESSING and job.attempts == 1


async def test_a_silent_workers_job_is_taken_over(client: Redis, store: RedisJobStore,
                                                  consumers: Consumers) -> None:
    queue = consumers("rescuer", claim_idle_s=0.3)
    await submit(store, queue, "c" * 32)
    task_id = await ghost_takes(client, store)
    assert await asyncio.wait_for(queue.get(), 10) == task_id
    assert queue.taken_over == 1
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.PENDING and job.progress == 0.0  # to run again
    restarted = await store.start(task_id)
    assert restarted is not None and restarted.attempts == 2
    [entry] = await pending_entries(client)
    assert entry["consumer"] == b"rescuer" and entry["times_delivered"] == 2
    await store.succeed(task_id, "{}")
    await queue.done(task_id)
    assert await pending_entries(client) == [] and await client.xlen(KEYS.queue) == 0


async def test_a_job_delivered_too_often_fails_with_a_reason(client: Redis, store: RedisJobStore,
                                                             consumers: Consumers) -> None:
    failed: list[str] = []
    queue = consumers("next", claim_idle_s=0.3, max_deliveries=1, failed=failed)
    await submit(store, queue, "d" * 32)
    task_id = await ghost_takes(client, store)
    getter = asyncio.create_task(queue.get())

    async def failed_job() -> bool:
        job = await store.get(task_id)
        return job is not None and job.status is JobStatus.FAILED

    await until(failed_job)  # the take-over is the second delivery: over the limit
    assert not getter.done()
    getter.cancel()
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == WORKER_LOST
    assert "2 times" in job.error.message and "limit is 1" in job.error.message
    assert failed == [task_id]
    assert await pending_entries(client) == [] and await client.xlen(KEYS.queue) == 0
    assert await store.count_waiting() == 0 and await store.unfinished() == []


async def test_a_job_requeued_at_shutdown_goes_back_at_once(client: Redis, store: RedisJobStore,
                                                            consumers: Consumers) -> None:
    leaving, staying = consumers("leaving"), consumers("staying")
    await submit(store, leaving, "e" * 32)
    task_id = await asyncio.wait_for(leaving.get(), 10)
    assert await store.start(task_id) is not None
    await store.requeue(task_id)  # what the runner does when it is cancelled mid-job
    await leaving.done(task_id)
    assert await asyncio.wait_for(staying.get(), 5) == task_id  # long before the 30 s claim time
    assert staying.taken_over == 0
    job = await store.start(task_id)
    assert job is not None and job.attempts == 2


async def test_a_worker_that_cannot_see_the_upload_fails_the_job_clearly(client: Redis, tmp_path: Path,
                                                                         consumers: Consumers) -> None:
    store = RedisJobStore(client, KEYS, RETENTION_S, check_uploads=True, holder="worker w9")
    queue = consumers("w9")
    await submit(store, queue, "f" * 32)  # its upload path, /nowhere/a.wav, is not on this machine
    task_id = await asyncio.wait_for(queue.get(), 10)
    assert await store.start(task_id) is None  # not run
    job = await store.get(task_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "upload_gone"
    assert "/nowhere/a.wav" in job.error.message and "worker w9" in job.error.message
    await queue.done(task_id)
    assert await pending_entries(client) == [] and await client.xlen(KEYS.queue) == 0
    present = tmp_path / "b.wav"
    present.write_bytes(b"RIFF")
    await store.add(new_job("9" * 32).replace(upload_path=str(present)))
    started = await store.start("9" * 32)
    assert started is not None and started.status is JobStatus.PROCESSING


async def test_waiting_and_unfinished_counts(store: RedisJobStore, consumers: Consumers) -> None:
    queue = consumers("w")
    for task_id in ("1" * 32, "2" * 32, "3" * 32):
        await submit(store, queue, task_id)
    assert await store.count_waiting() == 3
    assert await store.start("1" * 32) is not None
    await store.fail("2" * 32, JobError("not_audio", "no"))
    assert await store.count_waiting() == 1
    assert [job.task_id for job in await store.unfinished()] == ["1" * 32, "3" * 32]
    with pytest.raises(ValueError):
        await store.add(new_job("3" * 32))


async def test_queued_jobs_survive_a_redis_crash(redis_server: RedisServer, client: Redis,
                                                 store: RedisJobStore, consumers: Consumers) -> None:
    queue = consumers("w")
    task_ids = [str(n) * 32 for n in range(4, 7)]
    for task_id in task_ids:
        await submit(store, queue, task_id)
    redis_server.kill()  # SIGKILL: acknowledged writes are already in the append-only file
    redis_server.start()
    got = [await asyncio.wait_for(queue.get(), 30) for _ in task_ids]  # the same client reconnects
    assert sorted(got) == task_ids
    for task_id in task_ids:
        job = await store.get(task_id)
        assert job is not None and job.status is JobStatus.PENDING and job.settings == {"threshold": 1.5}
