"""What the job runner logs when a job ends badly: each pool restart it survives, its failure (once, with
the code), and an ``upload_gone`` found at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from server import appkeys
from server.config import Config
from server.jobs.model import Job, JobStatus
from server.jobs.runner import MAX_POOL_RESTARTS
from server.jobs.sqlite_store import SQLiteJobStore
from tests.analysis_files import get_task, make_file, post_file, wait_finished
from tests.conftest import StartServer


def runner_lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name.startswith("server.jobs") and task_id in record.getMessage()]


async def test_a_job_that_keeps_killing_workers_logs_each_restart_then_its_failure(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server(workers=2)
    url = str(server.make_url("")).rstrip("/")
    pool = server.app[appkeys.POOL]
    made = make_file(tmp_path, "flac", duration_s=240.0, seed=3)
    status, body = await post_file(http, url, made.path)
    assert status == 202, body
    task_id = body["task_id"]
    deadline = time.monotonic() + 120
    while (task := (await get_task(http, url, task_id))[1])["status"] not in ("success", "failed"):
        assert time.monotonic() < deadline, task
        if task["status"] == "processing":
            for pid in pool.worker_pids():
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.3)
    assert task["status"] == "failed" and task["error"]["code"] == "decoder_crashed", task
    lines = runner_lines(caplog, task_id)
    restarts = [line for line in lines if "restarting the job from scratch" in line]
    assert len(restarts) == MAX_POOL_RESTARTS, lines
    failures = [line for line in lines if f"job {task_id} failed: decoder_crashed" in line]
    assert len(failures) == 1, lines


async def test_an_upload_gone_at_start_up_is_logged(
    config: Config, start_server: StartServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = SQLiteJobStore(config.data_dir / "jobs.sqlite3")
    await store.open()
    now = time.time()
    task_id = "c" * 32
    await store.add(Job(task_id=task_id, status=JobStatus.PROCESSING, filename="x.wav",
                        upload_path=str(config.data_dir / "uploads" / f"{task_id}.upload"), settings={},
                        created_s=now, updated_s=now))
    await store.close()
    server = await start_server()
    task = await wait_finished(http, str(server.make_url("")).rstrip("/"), task_id)
    assert task["error"]["code"] == "upload_gone", task
    assert [line for line in runner_lines(caplog, task_id) if "failed at start-up: upload_gone" in line]
