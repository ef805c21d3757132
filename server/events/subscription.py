"""One subscriber's bounded queue of events: the publisher never waits, overflow is counted and reported."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from server.protocol.stream_messages import Event


def overflow_event(stream_id: str, dropped: int) -> Event:
    return {"type": "overflow", "stream_id": stream_id, "dropped": dropped}


class Subscription:
    """Events of one stream for one subscriber, at most ``limit`` waiting.

    :meth:`offer` never blocks: when the queue is full the event is dropped and counted. The subscriber
    learns of the loss in order: an ``overflow`` event carrying the count is queued ahead of the next
    event that fits (or returned when the queue runs empty). The final event (``ended``) is always kept.
    """

    def __init__(self, stream_id: str, limit: int, on_close: Callable[[Subscription], None] | None = None):
        if limit < 1:
            raise ValueError(f"a subscription needs room for at least one event, got {limit}")
        self.stream_id = stream_id
        self.limit = limit
        self.dropped_total = 0
        self._queue: deque[Event] = deque()
        self._dropped = 0  # dropped since the last overflow report
        self._finished = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._queue)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _report_overflow(self) -> None:
        if self._dropped:
            self._queue.append(overflow_event(self.stream_id, self._dropped))
            self._dropped = 0

    def offer(self, event: Event) -> None:
        """Queue ``event`` if there is room, else count it as dropped. Never blocks."""
        if self._finished or self._closed:
            return
        if len(self._queue) >= self.limit:
            self._dropped += 1
            self.dropped_total += 1
            return
        self._report_overflow()
        self._queue.append(event)
        self._wake()

    def finish(self, event: Event) -> None:
        """Queue the stream's final event, room or not; nothing is accepted after it."""
        if self._finished or self._closed:
            return
        self._report_overflow()
        self._queue.append(event)
        self._finished = True
        self._wake()

    async def get(self) -> Event | None:
        """The next event, waiting for one; ``None`` once the final event was taken or on close."""
        while not self._queue:
            if self._dropped:
                self._report_overflow()
                break
            if self._finished or self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving events (the subscriber left); a pending :meth:`get` returns ``None``."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._wake()
        if self._on_close is not None:
            self._on_close(self)
