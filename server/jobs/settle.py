"""Job-state writes that must happen but cannot now, retried until the store takes them.

Two things can refuse a write for a while: a shared store that cannot be reached
(:class:`~server.exceptions.StorageUnavailable`) and a disk with no room left for the embedded store's
database (:class:`~server.jobs.uploads.StorageFull`). A failure or a result that cannot be recorded is
handed to a :class:`Settler`, which offers it to the store again every :data:`SETTLE_RETRY_S` until it is
taken, so no task stays ``pending`` or ``processing`` once the store takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from server.exceptions import StorageUnavailable
from server.jobs.uploads import StorageFull
from server.jobs.watch import JobWatch

log = logging.getLogger(__name__)

SETTLE_RETRY_S = 1.0  # how often writes the store could not take are offered to it again
RETRYABLE = (StorageUnavailable, StorageFull)

Write = Callable[[], Awaitable[None]]


class Settler:
    """Writes waiting for the store, one per task id (a later one replaces an earlier one)."""

    def __init__(self, watch: JobWatch, retry_s: float = SETTLE_RETRY_S) -> None:
        self.watch = watch
        self.retry_s = retry_s
        self._waiting: dict[str, Write] = {}
        self._task: asyncio.Task[None] | None = None
        self.full = False  # the latest refusal was for lack of room on the disk

    def __len__(self) -> int:
        return len(self._waiting)

    async def now_or_later(self, task_id: str, write: Write,
                           retry: tuple[type[Exception], ...] = RETRYABLE) -> bool:
        """Run ``write``; if the store refuses it for now (one of ``retry``), retry it later.

        ``True`` if it was done now. Other exceptions propagate.
        """
        try:
            await write()
        except retry as exc:
            self.later(task_id, write, exc)
            return False
        self.watch.notify(task_id)
        return True

    def later(self, task_id: str, write: Write, cause: Exception | None = None) -> None:
        """Retry ``write`` for ``task_id`` every :attr:`retry_s` until the store takes it."""
        if cause is not None:
            self.full = isinstance(cause, StorageFull)
            log.warning("task %s: its state cannot be stored now (%s); it is stored once the store takes "
                        "writes again", task_id, cause, extra={"task_id": task_id})
        self._waiting[task_id] = write
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-settler")

    async def _run(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.retry_s)
            for task_id, write in list(self._waiting.items()):
                try:
                    await write()
                except RETRYABLE as exc:
                    self.full = isinstance(exc, StorageFull)
                    break
                if self._waiting.get(task_id) is write:
                    del self._waiting[task_id]
                log.info("task %s: its state was stored after a wait", task_id, extra={"task_id": task_id})
                self.watch.notify(task_id)
        self.full = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._waiting:
            log.warning("%d task(s) keep their stored state: the store took no writes until shutdown (at "
                        "the next start each is re-queued, or fails with upload_gone)", len(self._waiting))
