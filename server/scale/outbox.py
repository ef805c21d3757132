"""Commands for Redis queued by code that must not wait (a live stream's publisher), sent in order.

:meth:`RedisOutbox.put` never blocks: it queues an *operation*, a function that adds commands to a
pipeline when the batch is built (so it reads the freshest state then). One background task sends the
operations in order, many per round trip. Live events are delivered at most once: while Redis cannot be
reached (see :mod:`server.scale.availability`) ordinary operations (events) are refused and counted as
lost, while *essential* ones (a stream's withdrawal, a subscriber leaving) wait, within their limit, and
are sent once Redis answers again. A batch that meets the outage is lost but for its essential operations,
which go back to the head of the queue (each of them may safely run twice).
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

from server.scale.availability import OUTAGE_ERRORS, Availability
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
    def __init__(self, client: Redis, limit: int, availability: Availability | None = None) -> None:
        self._client = client
        self.limit = limit
        self.availability = availability or Availability(client)
        self._ops: deque[tuple[Op, bool]] = deque()  # (operation, essential)
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0  # operations refused because the queue was full
        self.lost = 0  # operations refused or dropped because Redis could not be reached
        self._logged_at_s = -LOG_INTERVAL_S

    def __len__(self) -> int:
        return len(self._ops)

    def put(self, op: Op, essential: bool = False) -> bool:
        """Queue ``op``; refused (``False``) when ``limit`` operations wait, or 4× that if ``essential``,
        and, unless ``essential``, while Redis cannot be reached."""
        if not essential and not self.availability.up:
            self.lost += 1
            return False
        if len(self._ops) >= self.limit * (ESSENTIAL_FACTOR if essential else 1):
            self.dropped += 1
            self._log(f"{self.dropped} operations dropped so far: Redis is not keeping up")
            return False
        self._ops.append((op, essential))
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
                    if self.availability.up:
                        await self._send_batch()
                    else:
                        self._drop_inessential()
                        await asyncio.sleep(RETRY_S)  # essential operations wait for Redis to answer
                self._idle.set()
        finally:
            self._idle.set()

    def _drop_inessential(self) -> None:
        kept = deque(item for item in self._ops if item[1])
        self.lost += len(self._ops) - len(kept)
        self._ops = kept

    async def _send_batch(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        batch: list[tuple[Op, bool]] = []
        while self._ops and len(batch) < BATCH_OPS:
            item = self._ops.popleft()
            batch.append(item)
            try:
                item[0](pipe)
            except Exception:
                log.exception("a queued Redis operation failed to build")
        if not len(pipe):
            return
        started_s = time.monotonic()
        try:
            await pipe.execute(raise_on_error=False)
        except OUTAGE_ERRORS as exc:
            self.availability.lost(exc, started_s)
            essential = [item for item in batch if item[1]]
            self._ops.extendleft(reversed(essential))
            self.lost += len(batch) - len(essential)
            await asyncio.sleep(RETRY_S)
        except RedisError as exc:
            self.lost += len(batch)
            self._log(f"{len(batch)} operations lost ({self.lost} so far): {exc}")
            await asyncio.sleep(RETRY_S)

    async def flush(self, timeout_s: float) -> None:
        """Wait until everything queued so far was sent (or ``timeout_s``; at once while Redis cannot be
        reached)."""
        if not self.availability.up:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    def _log(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self._logged_at_s >= LOG_INTERVAL_S:
            self._logged_at_s = now_s
            log.warning("redis outbox: %s", text)
