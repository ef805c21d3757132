"""In-process wake-ups for anyone following a job (a WebSocket upload waiting for progress).

Watchers still re-read the store after each wake-up or timeout, so a job run by a runner in another
process (which cannot notify here) is followed too, only less promptly.
"""

from __future__ import annotations

import asyncio
import contextlib


class JobWatch:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def notify(self, task_id: str) -> None:
        """Wake everyone waiting on ``task_id``."""
        for future in self._waiters.pop(task_id, set()):
            if not future.done():
                future.set_result(None)

    async def wait(self, task_id: str, timeout_s: float) -> None:
        """Return at the next :meth:`notify` of ``task_id`` or after ``timeout_s``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(task_id, set())
        waiters.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout_s)
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(task_id) is waiters:
                del self._waiters[task_id]
