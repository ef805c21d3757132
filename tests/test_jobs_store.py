"""The SQLite job store: state transitions, persistence across reopening, retention deletes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.jobs.model import Job, JobError, JobStatus
from server.jobs.sqlite_store import SQLiteJobStore


def new_job(task_id: str, created_s: float = 0.0) -> Job:
    now = created_s or time.time()
    return Job(task_id=task_id, status=JobStatus.PENDING, filename="a.wav", upload_path=f"/x/{task_id}",
               settings={"threshold": 2.0}, created_s=now, updated_s=now)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    opened = SQLiteJobStore(tmp_path / "db" / "jobs.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


async def test_life_of_a_job(store: SQLiteJobStore) -> None:
    await store.add(new_job("a"))
    assert await store.count_waiting() == 1
    started = await store.start("a")
    assert started is not None and started.status is JobStatus.PROCESSING and started.attempts == 1
    assert await store.start("a") is None  # only a pending job can start
    assert await store.count_waiting() == 0
    await store.set_progress("a", 0.5)
    assert (await store.get("a")).progress == 0.5  # type: ignore[union-attr]
    await store.succeed("a", '{"onsets":[]}')
    done = await store.get("a")
    assert done is not None and done.status is JobStatus.SUCCESS and done.progress == 1.0
    assert done.result() == {"onsets": []}
    assert done.status_json() == '{"task_id":"a","status":"success","progress":1.0,"result":{"onsets":[]}}'
    await store.fail("a", JobError("x", "y"))  # a finished job stays finished
    assert (await store.get("a")).status is JobStatus.SUCCESS  # type: ignore[union-attr]
    assert await store.get("missing") is None


async def test_failure_and_requeue(store: SQLiteJobStore) -> None:
    await store.add(new_job("b"))
    await store.start("b")
    await store.set_progress("b", 0.7)
    await store.requeue("b")
    again = await store.get("b")
    assert again is not None and again.status is JobStatus.PENDING and again.progress == 0.0
    await store.fail("b", JobError("not_audio", "no"))
    failed = await store.get("b")
    assert failed is not None and failed.error == JobError("not_audio", "no")
    assert failed.status_dict() == {"task_id": "b", "status": "failed", "progress": 0.0,
                                    "error": {"code": "not_audio", "message": "no"}}


async def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SQLiteJobStore(path)
    await first.open()
    await first.add(new_job("old", created_s=1.0))
    await first.add(new_job("new", created_s=2.0))
    await first.start("new")
    await first.close()

    second = SQLiteJobStore(path)
    await second.open()
    unfinished = await second.unfinished()
    assert [(j.task_id, j.status) for j in unfinished] == [("old", JobStatus.PENDING),
                                                           ("new", JobStatus.PROCESSING)]
    assert unfinished[0].settings == {"threshold": 2.0}
    await second.close()


async def test_delete_finished_before(store: SQLiteJobStore) -> None:
    for task_id in ("done", "failed", "waiting"):
        await store.add(new_job(task_id))
    await store.start("done")
    await store.succeed("done", "{}")
    await store.fail("failed", JobError("empty", "e"))
    assert await store.delete_finished_before(time.time() - 60) == []
    removed = await store.delete_finished_before(time.time() + 1)
    assert sorted(j.task_id for j in removed) == ["done", "failed"]
    assert await store.get("done") is None
    assert await store.get("waiting") is not None
