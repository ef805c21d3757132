"""What the analysis endpoints use: accept uploads as jobs, look them up, follow them; plus housekeeping.

One :class:`JobService` per server. It owns the store, the queue, the upload directory and (unless the
server runs without a local worker) a :class:`~server.jobs.runner.JobRunner`. At start it recovers jobs
cut short by a crash (re-queued if their upload is on disk, failed with ``upload_gone`` otherwise) and
deletes files no job owns; while it runs, a sweeper deletes finished jobs older than ``retention_s``.

A shared store (Redis) may be unreachable for a while: its calls then raise
:class:`~server.exceptions.StorageUnavailable`, which the endpoints answer with 503 / close 1013. A job
cut short by that has its stored upload deleted at once, and is marked failed once the store answers again.

The disk may be full: the upload or the embedded store's write then raises
:class:`~server.jobs.uploads.StorageFull` (507 / close 1013, nothing kept). Uploads are refused while less
than ``min_free_disk_bytes`` are free. A state write the store cannot take (at start-up recovery, or a
job's outcome) waits in the :class:`~server.jobs.settle.Settler` until there is room; the server starts
and serves meanwhile, and :meth:`JobService.storage_problems` (read by ``/readyz``) says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from server.config import Config
from server.dsp import DetectorSettings
from server.exceptions import SettingsError, StorageUnavailable, TransientError
from server.jobs.model import ErrorCode, Job, JobError, JobStatus
from server.jobs.queue import JobQueue
from server.jobs.runner import JobRunner
from server.jobs.settle import Settler
from server.jobs.store import JobStore
from server.jobs.uploads import StorageFull, UploadDir, UploadWriter
from server.jobs.watch import JobWatch
from server.pool import DetectionPool

log = logging.getLogger(__name__)

MAX_ACTIVE_JOBS = 4  # jobs analysed side by side by one runner; the rest wait in the queue
MIN_SWEEP_INTERVAL_S = 0.2
MAX_SWEEP_INTERVAL_S = 600.0
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
        self.settler = Settler(self.watch)
        self.runner: JobRunner | None = None
        if pool is not None:
            self.runner = JobRunner(store, queue, self.uploads, pool, self.watch,
                                    pool_slots=max(1, pool.workers - 1), max_active=MAX_ACTIVE_JOBS,
                                    settler=self.settler)
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: set[asyncio.Task[None]] = set()
        self._admitting = 0  # uploads past the queue check whose job is not stored yet
        self._admit_lock = asyncio.Lock()

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.uploads.create)
        try:
            await self.store.open()
            await self.recover()
        except StorageFull as exc:  # serve anyway: the store answers StorageFull until it has room
            log.error("the job store cannot start: %s; file tasks are refused until there is room", exc)
            self._tasks.append(asyncio.create_task(self._start_store_later(), name="job-store-start"))
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
        await self.settler.close()
        await self.store.close()

    async def _start_store_later(self) -> None:
        """Open the store and recover, tried every second until the disk has room."""
        await asyncio.to_thread(self.uploads.remove_all_work_files)  # spools are remade from scratch
        while True:
            await asyncio.sleep(self.settler.retry_s)
            try:
                await self.store.open()
                await self.recover()
            except StorageFull:
                continue
            log.info("the job store started once the disk had room")
            return

    async def recover(self) -> None:
        """Re-queue jobs cut short by a stop or crash; fail those whose upload is gone; drop orphan files.

        Files go first (orphans, and every work file: a re-queued job starts from scratch), so a full disk
        gets what room they held; a state the store still cannot take waits in the settler.
        """
        unfinished = await self.store.unfinished()
        keep = {job.task_id for job in unfinished
                if await asyncio.to_thread(Path(job.upload_path).is_file)}
        for path in await asyncio.to_thread(self.uploads.orphans, keep):
            await asyncio.to_thread(path.unlink, True)
        for job in unfinished:
            task_id = job.task_id
            await asyncio.to_thread(self.uploads.remove_work_files, task_id)
            if task_id in keep:
                if await self.settler.now_or_later(task_id, self._requeuer(task_id)):
                    log.info("job %s re-queued after a restart", task_id, extra={"task_id": task_id})
            else:
                error = JobError(ErrorCode.UPLOAD_GONE.value, "the server stopped before the upload was "
                                 "complete, or the stored upload was deleted")
                log.warning("job %s failed at start-up: %s: %s", task_id, error.code, error.message,
                            extra={"task_id": task_id})
                await self.settler.now_or_later(task_id, self._failer(task_id, error))

    def _requeuer(self, task_id: str) -> Callable[[], Awaitable[None]]:
        async def requeue() -> None:
            await self.store.requeue(task_id)
            await self.queue.put(task_id)

        return requeue

    def _failer(self, task_id: str, error: JobError) -> Callable[[], Awaitable[None]]:
        return lambda: self.store.fail(task_id, error)

    async def storage_problems(self) -> list[str]:
        """Why the data directory cannot take work now (a full disk, states waiting for room); read by
        ``/readyz``."""
        problems: list[str] = []
        free = await asyncio.to_thread(self.uploads.free_bytes)
        if free < self.config.min_free_disk_bytes:
            problems.append(f"the data directory's disk is full: {free} bytes free, fewer than "
                            f"min_free_disk_bytes ({self.config.min_free_disk_bytes})")
        if self.settler.full and len(self.settler):
            problems.append(f"{len(self.settler)} task state(s) wait for room on the disk to be stored")
        return problems

    async def _sweep(self) -> None:
        interval_s = min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, self.config.retention_s / 4))
        while True:
            await asyncio.sleep(interval_s)
            try:
                removed = await self.store.delete_finished_before(time.time() - self.config.retention_s)
                for job in removed:
                    await asyncio.to_thread(self.uploads.remove_job_files, job.task_id)
            except StorageFull as exc:
                log.warning("retention sweep skipped: %s", exc)
            except Exception:
                log.exception("retention sweep failed")

    # --- accepting jobs ------------------------------------------------------------------------------

    async def check_capacity(self) -> None:
        """Raise :class:`QueueFull` when ``max_queued_jobs`` jobs are already waiting (counting uploads
        admitted but not stored yet), :class:`StorageFull` when the disk has too little room."""
        # Read before the store is counted: an upload admitted now is stored only after being counted
        # here, so it is counted once or twice, never missed.
        admitting = self._admitting
        if await self.store.count_waiting() + admitting >= self.config.max_queued_jobs:
            raise QueueFull(self.config.max_queued_jobs)
        free = await asyncio.to_thread(self.uploads.free_bytes)
        if free < self.config.min_free_disk_bytes:
            raise StorageFull(f"{free} bytes free, fewer than the {self.config.min_free_disk_bytes} it keeps",
                              "an upload")

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold a place in the queue from the capacity check until the job is stored (or refused).

        Checks run one at a time, so concurrent uploads cannot all pass a check that counts only stored
        jobs; :meth:`check_capacity` never misses a job moving from admitted to stored.
        """
        async with self._admit_lock:
            await self.check_capacity()
            self._admitting += 1
        try:
            yield
        finally:
            self._admitting -= 1

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
            except StorageFull:  # no job was recorded: keep nothing
                await asyncio.to_thread(self.uploads.remove_job_files, task_id)
                raise
            except StorageUnavailable:
                await self._withdraw(task_id)
                raise
            try:
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
        await self.settler.now_or_later(task_id, self._failer(task_id, error))

    def _fail_later(self, task_id: str, error: JobError) -> None:
        """Record ``error`` for ``task_id`` as soon as the store answers (tried every second)."""
        self.settler.later(task_id, self._failer(task_id, error))

    async def shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to the end even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    # --- looking up ----------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Job | None:
        return await self.store.get(task_id)
