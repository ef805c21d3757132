"""The queue of task ids waiting for a runner.

The store is the source of truth (a job is ``pending`` until a runner starts it); the queue only says
which job to try next. :class:`LocalJobQueue` serves one process; a shared queue (e.g. Redis Streams) for
runners on other machines implements the same protocol.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class JobQueue(Protocol):
    async def put(self, task_id: str) -> None: ...

    async def get(self) -> str:
        """The next task id, waiting until there is one."""

    async def done(self, task_id: str) -> None:
        """The runner has finished with ``task_id`` (acknowledge it)."""


class LocalJobQueue:
    """An in-process FIFO of task ids."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def __len__(self) -> int:
        return self._queue.qsize()

    async def put(self, task_id: str) -> None:
        self._queue.put_nowait(task_id)

    async def get(self) -> str:
        return await self._queue.get()

    async def done(self, task_id: str) -> None:
        return None
