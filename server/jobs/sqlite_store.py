"""The embedded job store: one SQLite file under the data directory, used from one dedicated thread.

SQLite calls block, so every call runs on a single-thread executor owned by the store (never on the event
loop). WAL journal with ``synchronous=NORMAL``: a committed state survives a process crash. A write refused
because the disk is full (``SQLITE_FULL``) raises
:class:`~server.jobs.uploads.StorageFull`; the caller retries it once there is room (see
:mod:`server.jobs.settle`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from server.jobs.model import Job, JobError, JobStatus
from server.jobs.uploads import StorageFull

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    task_id     TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    filename    TEXT NOT NULL,
    upload_path TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_s   REAL NOT NULL,
    updated_s   REAL NOT NULL,
    progress    REAL NOT NULL DEFAULT 0,
    result      TEXT,
    error_code  TEXT,
    error_msg   TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_s);
"""

COLUMNS = ("task_id, status, filename, upload_path, settings, created_s, updated_s, progress, result, "
           "error_code, error_msg, attempts")
FULL_BELOW_BYTES = 1 << 20  # an I/O error opening the database with less room than this: the disk is full
UNFINISHED = (JobStatus.PENDING.value, JobStatus.PROCESSING.value)


def _no_room(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused the write for lack of room on the disk (``SQLITE_FULL``)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


def _disk_full(folder: Path) -> bool:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES


def _row_to_job(row: tuple[Any, ...]) -> Job:
    (task_id, status, filename, upload_path, settings, created_s, updated_s, progress, result, error_code,
     error_msg, attempts) = row
    error = JobError(error_code, error_msg or "") if error_code is not None else None
    return Job(task_id=task_id, status=JobStatus(status), filename=filename, upload_path=upload_path,
               settings=json.loads(settings), created_s=created_s, updated_s=updated_s, progress=progress,
               result_json=result, error=error, attempts=attempts)


class SQLiteJobStore:
    """:class:`~server.jobs.store.JobStore` on SQLite at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        self._db: sqlite3.Connection | None = None
        self._unopened: str | None = None  # why open() found no room, until it succeeds

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._db is None and self._unopened is not None:
                raise StorageFull(self._unopened, "the task's state")
            assert self._db is not None, "the job store is not open"
            try:
                with self._db:  # one transaction per call
                    return fn(self._db)
            except sqlite3.Error as exc:
                if _no_room(exc):
                    raise StorageFull(str(exc), "the task's state") from exc
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> None:
        """Open (or create) the database. Raises :class:`StorageFull` if the disk has no room for its
        journal files; every call then raises it too, until an ``open()`` succeeds."""

        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
            except sqlite3.Error as exc:
                db.close()
                # Opening a WAL database creates its shared-memory index: an I/O error on a full disk.
                primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if _no_room(exc) or (primary == sqlite3.SQLITE_IOERR and _disk_full(self.path.parent)):
                    self._unopened = f"the job database cannot be opened: {exc}"
                    raise StorageFull(self._unopened, "the task's state") from exc
                raise
            db.isolation_level = "DEFERRED"
            self._db = db
            self._unopened = None

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def add(self, job: Job) -> None:
        values = (job.task_id, job.status.value, job.filename, job.upload_path, json.dumps(job.settings),
                  job.created_s, job.updated_s, job.progress, job.result_json,
                  job.error.code if job.error else None, job.error.message if job.error else None,
                  job.attempts)
        await self._call(lambda db: db.execute(
            f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(values))})", values))

    async def get(self, task_id: str) -> Job | None:
        def get(db: sqlite3.Connection) -> Job | None:
            row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE task_id = ?", (task_id,)).fetchone()
            return None if row is None else _row_to_job(row)

        return await self._call(get)

    async def count_waiting(self) -> int:
        def count(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?",
                                  (JobStatus.PENDING.value,)).fetchone()[0])

        return await self._call(count)

    async def count_by_status(self) -> dict[str, int]:
        """Jobs in each state (states with none are absent); read by ``GET /metrics``."""
        def count(db: sqlite3.Connection) -> dict[str, int]:
            return {status: int(n) for status, n in
                    db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()}

        return await self._call(count)

    async def start(self, task_id: str) -> Job | None:
        def start(db: sqlite3.Connection) -> Job | None:
            changed = db.execute(
                "UPDATE jobs SET status = ?, progress = 0, attempts = attempts + 1, updated_s = ? "
                "WHERE task_id = ? AND status = ?",
                (JobStatus.PROCESSING.value, time.time(), task_id, JobStatus.PENDING.value)).rowcount
            if not changed:
                return None
            row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE task_id = ?", (task_id,)).fetchone()
            return _row_to_job(row)

        return await self._call(start)

    async def set_progress(self, task_id: str, progress: float) -> None:
        await self._call(lambda db: db.execute(
            "UPDATE jobs SET progress = ?, updated_s = ? WHERE task_id = ? AND status = ?",
            (progress, time.time(), task_id, JobStatus.PROCESSING.value)))

    async def succeed(self, task_id: str, result_json: str) -> None:
        await self._call(lambda db: db.execute(
            "UPDATE jobs SET status = ?, progress = 1, result = ?, updated_s = ? WHERE task_id = ?",
            (JobStatus.SUCCESS.value, result_json, time.time(), task_id)))

    async def fail(self, task_id: str, error: JobError) -> None:
        await self._call(lambda db: db.execute(
            "UPDATE jobs SET status = ?, error_code = ?, error_msg = ?, updated_s = ? "
            "WHERE task_id = ? AND status IN (?, ?)",
            (JobStatus.FAILED.value, error.code, error.message, time.time(), task_id, *UNFINISHED)))

    async def requeue(self, task_id: str) -> None:
        await self._call(lambda db: db.execute(
            "UPDATE jobs SET status = ?, progress = 0, updated_s = ? WHERE task_id = ? AND status IN (?, ?)",
            (JobStatus.PENDING.value, time.time(), task_id, *UNFINISHED)))

    async def unfinished(self) -> list[Job]:
        def unfinished(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE status IN (?, ?) ORDER BY created_s",
                              UNFINISHED).fetchall()
            return [_row_to_job(row) for row in rows]

        return await self._call(unfinished)

    async def delete_finished_before(self, before_s: float) -> list[Job]:
        def delete(db: sqlite3.Connection) -> list[Job]:
            where = "status IN (?, ?) AND updated_s < ?"
            args = (JobStatus.SUCCESS.value, JobStatus.FAILED.value, before_s)
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE {where}", args).fetchall()
            db.execute(f"DELETE FROM jobs WHERE {where}", args)
            return [_row_to_job(row) for row in rows]

        return await self._call(delete)
