"""What the analysis endpoints use: accept uploads as jobs, look them up, follow them; plus housekeeping.

One :class:`JobService` per server. It owns the store, the queue, the upload directory and (unless the
server runs without a local worker) a :class:`~server.jobs.runner.JobRunner`. At start it recovers jobs
cut short by a crash (re-queued if their upload is on disk, failed with ``upload_gone`` otherwise) and
deletes files no job owns; while it runs, a sweeper deletes finished jobs older than ``retention_s``.

A shared store (Redis) may be unreachable for a while: its calls then raise
:class:`~server.exceptions.StorageUnavailable`, which the endpoints answer with 503 / close 1013. A job
cut short by that has its stored upload deleted at once, and is marked failed once the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from server.config import Config
from server.dsp import DetectorSettings
from server.exceptions import SettingsError, StorageUnavailable, TransientError
from server.jobs.model import ErrorCode, Job, JobError, JobStatus
from server.jobs.queue import JobQueue
from server.jobs.runner import JobRunner
from server.jobs.store import JobStore
from server.jobs.uploads import UploadDir, UploadWriter
from server.jobs.watch import JobWatch
from server.pool import DetectionPool

log = logging.getLogger(__name__)

MAX_ACTIVE_JOBS = 4  # jobs analysed side by side by one runner; the rest wait in the queue
MIN_SWEEP_INTERVAL_S = 0.2
MAX_SWEEP_INTERVAL_S = 600.0
SETTLE_RETRY_S = 1.0  # how often failures the store could not take are offered to it again
STORAGE_LOST = JobError(ErrorCode.STORAGE_UNAVAILABLE.value, "the shared storage could not be reached when "
                        "the upload completed, so the task was never queued; upload the file again")


class QueueFull(TransientError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are already waiting; try again later")
        self.limit = limit


def parse_settings(values: object) -> DetectorSettings:
    """A client's ``settings`` object (``None``: defaults). Raises :class:`SettingsError` naming the value."""
    if values is None:
        return DetectorSettings()
    if not isinstance(values, Mapping):
        raise SettingsError("settings", values, "must be an object of setting names to values")
    return DetectorSettings.from_mapping(values)


class JobService:
    def __init__(self, config: Config, store: JobStore, queue: JobQueue, pool: DetectionPool | None) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.uploads = UploadDir(config.data_dir)
        self.watch = JobWatch()
        self.runner: JobRunner | None = None
        if pool is not None:
            self.runner = JobRunner(store, queue, self.uploads, pool, self.watch,
                                    pool_slots=max(1, pool.workers - 1), max_active=MAX_ACTIVE_JOBS)
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: set[asyncio.Task[None]] = set()
        self._unsettled: dict[str, JobError] = {}  # failures to store once the store answers again
        self._settler: asyncio.Task[None] | None = None

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.uploads.create)
        await self.store.open()
        await self.recover()
        if self.runner is not None:
            self._tasks.append(asyncio.create_task(self.runner.run(), name="job-runner"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="job-retention"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._settler is not None:
            self._settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settler
        if self._unsettled:
            log.warning("%d task(s) stay pending: the store was unreachable until shutdown",
                        len(self._unsettled))
        await self.store.close()

    async def recover(self) -> None:
        """Re-queue jobs cut short by a stop or crash; fail those whose upload is gone; drop orphan files."""
        unfinished = await self.store.unfinished()
        keep: set[str] = set()
        for job in unfinished:
            if await asyncio.to_thread(Path(job.upload_path).is_file):
                keep.add(job.task_id)
                await self.store.requeue(job.task_id)
                await self.queue.put(job.task_id)
                log.info("job %s re-queued after a restart", job.task_id, extra={"task_id": job.task_id})
            else:
                await self.store.fail(job.task_id, JobError(
                    ErrorCode.UPLOAD_GONE.value, "the server stopped before the upload was complete, "
                    "or the stored upload was deleted"))
        for path in await asyncio.to_thread(self.uploads.orphans, keep):
            await asyncio.to_thread(path.unlink, True)

    async def _sweep(self) -> None:
        interval_s = min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, self.config.retention_s / 4))
        while True:
            await asyncio.sleep(interval_s)
            try:
                removed = await self.store.delete_finished_before(time.time() - self.config.retention_s)
                for job in removed:
                    await asyncio.to_thread(self.uploads.remove_job_files, job.task_id)
            except Exception:
                log.exception("retention sweep failed")

    # --- accepting jobs ------------------------------------------------------------------------------

    async def check_capacity(self) -> None:
        """Raise :class:`QueueFull` when ``max_queued_jobs`` jobs are already waiting."""
        if await self.store.count_waiting() >= self.config.max_queued_jobs:
            raise QueueFull(self.config.max_queued_jobs)

    @staticmethod
    def new_task_id() -> str:
        return uuid.uuid4().hex

    def writer(self, task_id: str) -> UploadWriter:
        return self.uploads.writer(task_id, self.config.max_upload_bytes)

    def _job(self, task_id: str, filename: str, settings: DetectorSettings) -> Job:
        now = time.time()
        return Job(task_id=task_id, status=JobStatus.PENDING, filename=filename,
                   upload_path=str(self.uploads.upload_path(task_id)), settings=settings.to_dict(),
                   created_s=now, updated_s=now)

    async def submit(self, writer: UploadWriter, task_id: str, filename: str,
                     settings: DetectorSettings) -> None:
        """Store the upload for good, create its job and queue it, even if the caller is cancelled."""

        async def submit() -> None:
            await writer.commit()
            try:
                await self.store.add(self._job(task_id, filename, settings))
                await self.queue.put(task_id)
            except StorageUnavailable:
                await self._withdraw(task_id)
                raise

        await self.shielded(submit())

    async def reserve(self, task_id: str, filename: str, settings: DetectorSettings) -> Job:
        """Create a ``pending`` job whose upload is still arriving; :meth:`enqueue` it once stored."""
        job = self._job(task_id, filename, settings)
        try:
            await self.store.add(job)
        except StorageUnavailable:
            self._fail_later(task_id, STORAGE_LOST)  # in case the record was written and the reply lost
            raise
        return job

    async def enqueue(self, writer: UploadWriter, task_id: str) -> None:
        """Store the complete upload of a reserved job for good and queue the job."""

        async def enqueue() -> None:
            await writer.commit()
            try:
                await self.queue.put(task_id)
            except StorageUnavailable:
                await self._withdraw(task_id)
                raise

        await self.shielded(enqueue())

    async def _withdraw(self, task_id: str) -> None:
        """A stored upload whose job could not be recorded or queued: delete it; fail the job later."""
        await asyncio.to_thread(self.uploads.remove_job_files, task_id)
        self._fail_later(task_id, STORAGE_LOST)

    async def abandon(self, task_id: str, error: JobError, writer: UploadWriter | None = None) -> None:
        """Fail a reserved job whose upload did not complete, and delete what arrived.

        The clean-up finishes even if the caller is cancelled (a handler whose client went away).
        """
        await self.shielded(self._abandon(task_id, error, writer))

    async def _abandon(self, task_id: str, error: JobError, writer: UploadWriter | None) -> None:
        if writer is not None:
            await writer.discard()
        await asyncio.to_thread(self.uploads.remove_job_files, task_id)
        try:
            await self.store.fail(task_id, error)
        except StorageUnavailable:
            self._fail_later(task_id, error)
        self.watch.notify(task_id)

    def _fail_later(self, task_id: str, error: JobError) -> None:
        """Record ``error`` for ``task_id`` as soon as the store answers (tried every second)."""
        self._unsettled[task_id] = error
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle(), name="job-failures")

    async def _settle(self) -> None:
        while self._unsettled:
            await asyncio.sleep(SETTLE_RETRY_S)
            for task_id, error in list(self._unsettled.items()):
                try:
                    await self.store.fail(task_id, error)
                except StorageUnavailable:
                    break
                del self._unsettled[task_id]
                self.watch.notify(task_id)

    async def shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to the end even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    # --- looking up ----------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Job | None:
        return await self.store.get(task_id)
