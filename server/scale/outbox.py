"""Commands for Redis queued by code that must not wait (a live stream's publisher), sent in order.

:meth:`RedisOutbox.put` never blocks: it queues an *operation*, a function that adds commands to a
pipeline when the batch is built (so it reads the freshest state then). One background task sends the
operations in order, many per round trip. When Redis is unreachable a batch is dropped, counted and
logged, and sending resumes once it answers again: live events are delivered at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from server.scale.client import Redis

log = logging.getLogger(__name__)

Op = Callable[[Pipeline], object]

BATCH_OPS = 512  # operations per pipeline round trip
RETRY_S = 0.5  # pause after a failed batch
LOG_INTERVAL_S = 30.0
ESSENTIAL_FACTOR = 4  # essential operations may exceed the limit this many times over before any is dropped


def queue_script(pipe: Pipeline, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Add a call of ``script`` to ``pipe``; the pipeline loads the script first if Redis lacks it."""
    cast(set[AsyncScript], pipe.scripts).add(script)
    pipe.evalsha(script.sha, len(keys), *keys, *args)


class RedisOutbox:
    def __init__(self, client: Redis, limit: int) -> None:
        self._client = client
        self.limit = limit
        self._ops: deque[Op] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0  # operations refused because the queue was full
        self.lost = 0  # operations in batches Redis did not take
        self._logged_at_s = -LOG_INTERVAL_S

    def __len__(self) -> int:
        return len(self._ops)

    def put(self, op: Op, essential: bool = False) -> bool:
        """Queue ``op``; refused (``False``) when ``limit`` operations wait, or 4× that if ``essential``."""
        if len(self._ops) >= self.limit * (ESSENTIAL_FACTOR if essential else 1):
            self.dropped += 1
            self._log(f"{self.dropped} operations dropped so far: Redis is not keeping up")
            return False
        self._ops.append(op)
        self._idle.clear()
        self._wakeup.set()
        return True

    async def run(self) -> None:
        """Send queued operations until cancelled."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._ops:
                    await self._send_batch()
                self._idle.set()
        finally:
            self._idle.set()

    async def _send_batch(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        count = 0
        while self._ops and count < BATCH_OPS:
            op = self._ops.popleft()
            count += 1
            try:
                op(pipe)
            except Exception:
                log.exception("a queued Redis operation failed to build")
        if not len(pipe):
            return
        try:
            await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self.lost += count
            self._log(f"{count} operations lost ({self.lost} so far): {exc}")
            await asyncio.sleep(RETRY_S)

    async def flush(self, timeout_s: float) -> None:
        """Wait until everything queued so far was sent (or ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    def _log(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self._logged_at_s >= LOG_INTERVAL_S:
            self._logged_at_s = now_s
            log.warning("redis outbox: %s", text)
