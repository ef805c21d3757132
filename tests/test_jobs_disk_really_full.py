"""A disk that really fills up (a small tmpfs as the data directory) never leaves a task ``processing``,
never keeps its files, never stops the server from starting, and ``/readyz`` says so while it lasts.

Mounting a tmpfs needs root (CI runs as root on this kind of machine); the mount is detached lazily at
teardown, after the server process has stopped using it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from server.jobs.model import Job, JobStatus
from server.jobs.sqlite_store import SQLiteJobStore
from testkit.disk import fill
from tests.analysis_files import get_task, make_file, matches, post_file, wait_finished
from tests.conftest import ServerProcess, run_async

FILL_BLOCK_BYTES = 64 * 1024

Mount = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """``small_disk(size_bytes)``: a fresh tmpfs of that size mounted as ``tmp_path / "data"``."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / "data"
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def job_files(data_dir: Path) -> list[str]:
    return sorted(p.name for folder in ("uploads", "work") for p in (data_dir / folder).iterdir())


async def job_files_after_end(data_dir: Path, within_s: float = 5.0) -> list[str]:
    """The job files still there ``within_s`` after the tasks ended, or none as soon as they are gone. A
    successful job's upload is deleted just after its result is recorded (so a crash between the two loses
    nothing), so a client that sees `success` may see the upload for a moment more."""
    deadline = time.monotonic() + within_s
    while (left := job_files(data_dir)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return left


async def readiness(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, object]]:
    async with http.get(base + "/readyz") as resp:
        return resp.status, await resp.json()


def no_tracebacks(proc: ServerProcess) -> None:
    assert not [line for line in proc.output if "Traceback" in line], list(proc.output)[-30:]


def test_two_mp3_jobs_whose_spools_fill_the_disk_end_failed_and_keep_nothing(
    server_process: Callable[..., ServerProcess], small_disk: Mount, tmp_path: Path
) -> None:
    mp3 = make_file(tmp_path, "mp3", duration_s=90.0)  # about 1 MB; its decode spool is as large again
    size = mp3.path.stat().st_size
    assert size > 2 * 512 * 1024  # a spool cannot fit in the 512 KiB left beside two uploads
    data_dir = small_disk(2 * size + 512 * 1024)  # room for both uploads, not for a spool besides
    proc = server_process("--workers", "2", "--min-free-disk-bytes", "0", data_dir=data_dir)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            posted = await asyncio.gather(*(post_file(http, proc.url, mp3.path, filename="a.mp3")
                                            for _ in range(2)))
            assert [status for status, _ in posted] == [202, 202], posted
            done = await asyncio.gather(*(wait_finished(http, proc.url, body["task_id"], monotonic=False)
                                          for _, body in posted))
            codes = [task.get("error", {}).get("code") for task in done]
            assert all(task["status"] == "success" or code == "insufficient_storage"
                       for task, code in zip(done, codes, strict=True)), done
            assert "insufficient_storage" in codes, done
            assert await job_files_after_end(data_dir) == []  # uploads and spools deleted
            status, ready = await readiness(http, proc.url)
            assert status == 200, ready
            # The disk has room again: the same file alone fits with its spool.
            status, body = await post_file(http, proc.url, mp3.path, filename="a.mp3")
            assert status == 202, body
            task = await wait_finished(http, proc.url, body["task_id"])
            assert task["status"] == "success", task
            assert matches([o["time"] for o in task["result"]["onsets"]], mp3.onsets_s) >= 0.9
            assert await job_files_after_end(data_dir) == []

    run_async(scenario())
    no_tracebacks(proc)
    assert any("failed: insufficient_storage" in line for line in proc.output), list(proc.output)[-30:]


def test_a_restart_on_a_full_disk_starts_and_settles_every_task_once_there_is_room(
    server_process: Callable[..., ServerProcess], small_disk: Mount, tmp_path: Path
) -> None:
    data_dir = small_disk(4 << 20)
    uploads = data_dir / "uploads"
    uploads.mkdir()
    made = make_file(tmp_path, "wav", duration_s=3.0)
    running, gone = "a" * 32, "b" * 32
    (uploads / f"{running}.upload").write_bytes(made.path.read_bytes())

    async def crash_state() -> None:  # what a server killed mid-job leaves behind
        store = SQLiteJobStore(data_dir / "jobs.sqlite3")
        await store.open()
        now = time.time()
        for task_id, status in ((running, JobStatus.PROCESSING), (gone, JobStatus.PENDING)):
            await store.add(Job(task_id=task_id, status=status, filename="x.wav",
                                upload_path=str(uploads / f"{task_id}.upload"), settings={},
                                created_s=now, updated_s=now, progress=0.4))
        await store.close()

    run_async(crash_state())
    filler = fill(data_dir, block_bytes=FILL_BLOCK_BYTES)
    proc = server_process("--workers", "1", "--min-free-disk-bytes", "65536", data_dir=data_dir)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            status, ready = await readiness(http, proc.url)
            assert status == 503, ready
            assert any("disk is full" in problem for problem in ready["problems"]), ready  # type: ignore[attr-defined]
            for task_id in (running, gone):  # the job store cannot even be opened yet
                status, task = await get_task(http, proc.url, task_id)
                assert status == 503 and task["error"]["code"] == "insufficient_storage", task
            status, body = await post_file(http, proc.url, made.path, filename="x.wav")
            assert status == 507 and body["error"]["code"] == "insufficient_storage", body

            filler.unlink()  # room again: within a few seconds the store opens and recovers
            deadline = time.monotonic() + 30.0
            while (await get_task(http, proc.url, running))[0] != 200:
                assert time.monotonic() < deadline, "the job store did not open once there was room"
                await asyncio.sleep(0.1)
            task = await wait_finished(http, proc.url, running, monotonic=False)
            assert task["status"] == "success", task
            assert matches([o["time"] for o in task["result"]["onsets"]], made.onsets_s) >= 0.9
            task = await wait_finished(http, proc.url, gone, monotonic=False)
            assert task["status"] == "failed" and task["error"]["code"] == "upload_gone", task
            assert await job_files_after_end(data_dir) == []
            status, ready = await readiness(http, proc.url)
            assert status == 200, ready

    run_async(scenario())
    no_tracebacks(proc)
    assert any(f"job {gone} failed at start-up: upload_gone" in line for line in proc.output), \
        list(proc.output)[-30:]


def test_a_disk_filled_from_outside_during_a_job_does_not_leave_it_processing(
    server_process: Callable[..., ServerProcess], small_disk: Mount, tmp_path: Path
) -> None:
    made = make_file(tmp_path, "wav", duration_s=120.0)  # about 21 MB
    data_dir = small_disk(made.path.stat().st_size + (4 << 20))
    proc = server_process("--workers", "1", "--min-free-disk-bytes", "65536", data_dir=data_dir)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            status, body = await post_file(http, proc.url, made.path, filename="long.wav")
            assert status == 202, body
            task_id = body["task_id"]
            while (task := (await get_task(http, proc.url, task_id))[1])["status"] == "pending":
                await asyncio.sleep(0.01)
            assert task["status"] == "processing", task
            filler = fill(data_dir, block_bytes=FILL_BLOCK_BYTES)
            status, ready = await readiness(http, proc.url)
            assert status == 503, ready
            await asyncio.sleep(3.0)  # the job goes on; what it cannot store waits
            filler.unlink()
            task = await wait_finished(http, proc.url, task_id, monotonic=False)
            assert task["status"] == "success", task
            assert matches([o["time"] for o in task["result"]["onsets"]], made.onsets_s) >= 0.9
            assert await job_files_after_end(data_dir) == []
            status, ready = await readiness(http, proc.url)
            assert status == 200, ready

    run_async(scenario())
    no_tracebacks(proc)
