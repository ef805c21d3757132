"""Jobs survive what can happen to a server: SIGKILL mid-job, a dead pool worker, a lost upload."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from server import appkeys
from server.config import Config
from server.dsp import detect_onsets
from server.jobs.model import Job, JobStatus
from server.jobs.sqlite_store import SQLiteJobStore
from tests.analysis_files import decode_whole, get_task, make_file, post_file, wait_finished
from tests.conftest import ServerProcess, StartServer

KILL_TIMEOUT_S = 120.0


def expected_times(path: Path) -> list[float]:
    samples, rate = decode_whole(path)
    return [o.time for o in detect_onsets(samples, rate)]


async def test_sigkill_mid_job_then_restart_finishes_every_job(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    files = [make_file(tmp_path, name, duration_s=60.0, seed=seed)
             for seed, name in enumerate(["flac", "webm", "flac", "wav", "webm", "flac"])]
    # WARNING: no access log, whose lines would fill the unread stdout pipe and stall the server
    first = server_process("--workers", "1", "--log-level", "WARNING", data_dir=data_dir)
    async with aiohttp.ClientSession() as http:
        posted = await asyncio.gather(*(post_file(http, first.url, f.path) for f in files))
        ids = [body["task_id"] for _, body in posted]
        # kill as soon as a job is part-way through
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while True:
            states = [(await get_task(http, first.url, task_id))[1] for task_id in ids]
            if any(s["status"] == "processing" and s["progress"] > 0 for s in states):
                break
            assert time.monotonic() < deadline, states
            assert not all(s["status"] == "success" for s in states), "every job finished before the kill"
            await asyncio.sleep(0.02)
        first.signal(signal.SIGKILL)
        first.wait()

        second = server_process("--workers", "1", "--log-level", "WARNING", data_dir=data_dir)
        after = [(await get_task(http, second.url, task_id))[1] for task_id in ids]
        assert all(s["status"] in ("pending", "processing", "success") for s in after), after
        finished = await asyncio.gather(*(wait_finished(http, second.url, task_id) for task_id in ids))
    for made, done in zip(files, finished, strict=True):
        assert done["status"] == "success", done
        assert [o["time"] for o in done["result"]["onsets"]] == expected_times(made.path)
    assert list((data_dir / "uploads").iterdir()) == []


async def test_dead_pool_worker_restarts_the_job(server: TestServer, http: aiohttp.ClientSession,
                                                 tmp_path: Path) -> None:
    made = make_file(tmp_path, "webm", duration_s=60.0, seed=9)
    url = str(server.make_url("")).rstrip("/")
    _, body = await post_file(http, url, made.path)
    pool = server.app[appkeys.POOL]
    for _ in range(2000):
        task = (await get_task(http, url, body["task_id"]))[1]
        if task["status"] != "pending":
            break
        await asyncio.sleep(0.01)
    for pid in pool.worker_pids():
        signal_pid(pid)
    done = await wait_finished(http, url, body["task_id"], monotonic=False)
    assert done["status"] == "success", done
    assert [o["time"] for o in done["result"]["onsets"]] == expected_times(made.path)
    if task["status"] == "processing":
        assert pool.rebuilds >= 1


def signal_pid(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


async def test_start_up_requeues_or_fails_unfinished_jobs(
    config: Config, start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    uploads = config.data_dir / "uploads"
    uploads.mkdir(parents=True)
    made = make_file(tmp_path, "wav", duration_s=3.0)
    shutil.copy(made.path, uploads / ("a" * 32 + ".upload"))
    (uploads / "orphan.part").write_bytes(b"left from a crash")
    (uploads / ("b" * 32 + ".part")).write_bytes(b"an upload cut short by a crash")
    store = SQLiteJobStore(config.data_dir / "jobs.sqlite3")
    await store.open()
    now = time.time()
    for task_id, status in (("a" * 32, JobStatus.PROCESSING), ("b" * 32, JobStatus.PENDING)):
        await store.add(Job(task_id=task_id, status=status, filename="x.wav",
                            upload_path=str(uploads / f"{task_id}.upload"), settings={}, created_s=now,
                            updated_s=now, progress=0.4))
    await store.close()

    server = await start_server()
    url = str(server.make_url("")).rstrip("/")
    requeued = await wait_finished(http, url, "a" * 32)
    assert requeued["status"] == "success"
    assert [o["time"] for o in requeued["result"]["onsets"]] == expected_times(made.path)
    gone = (await get_task(http, url, "b" * 32))[1]
    assert gone["status"] == "failed" and gone["error"]["code"] == "upload_gone"
    assert sorted(path.name for path in uploads.iterdir()) == []  # the orphan and the partial upload
