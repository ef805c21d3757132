"""This process's one pub/sub connection, shared by everything that listens; channels are reference-counted.

Handlers run on the event loop in the listener's task and must not block. When the connection drops,
redis-py reconnects and subscribes again to every channel; messages published meanwhile are lost (pub/sub
delivers at most once). The listener keeps trying until it is closed; a lost connection is reported to the
process's :class:`~server.scale.availability.Availability`, which logs the outage once. A channel whose
unsubscribe failed for want of Redis is unsubscribed once the connection is back (redis-py would otherwise
subscribe to it again on reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from redis.exceptions import RedisError

from server.scale.availability import OUTAGE_ERRORS, Availability
from server.scale.client import Redis

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]  # (channel, message data)

SUBSCRIBE_TIMEOUT_S = 10.0  # how long a new subscription waits for Redis to confirm it
RETRY_S = 0.5  # pause after a failed read before trying again
LOG_INTERVAL_S = 30.0  # least time between two logged connection failures


class Listener:
    def __init__(self, client: Redis, availability: Availability | None = None) -> None:
        self._pubsub = client.pubsub()
        self.availability = availability or Availability(client)
        self._leftover: set[str] = set()  # channels released while Redis was unreachable
        self._handlers: dict[str, Handler] = {}
        self._refs: Counter[str] = Counter()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()  # keeps SUBSCRIBE / UNSUBSCRIBE in the order they were asked for
        self._task: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._logged_at_s = -LOG_INTERVAL_S

    async def start(self, channel: str, handler: Handler) -> None:
        """Subscribe to a first, permanent ``channel`` and start listening."""
        confirmed = await self._subscribe(channel, handler)  # opens the pub/sub connection
        self._task = asyncio.create_task(self._run(), name="redis-listener")
        await self._confirm(channel, confirmed)

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    async def acquire(self, channel: str, handler: Handler) -> None:
        """Receive ``channel``'s messages in ``handler`` once Redis confirms; pair with :meth:`release`.

        A channel already held keeps its first handler.
        """
        await self._confirm(channel, await self._subscribe(channel, handler))

    async def _subscribe(self, channel: str, handler: Handler) -> asyncio.Future[None]:
        async with self._lock:
            self._refs[channel] += 1
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
                self._handlers[channel] = handler
                try:
                    await self._pubsub.subscribe(channel)
                except BaseException:
                    self._drop(channel)
                    raise
            return confirmed

    async def _confirm(self, channel: str, confirmed: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_S)
        except BaseException:
            self.release(channel)
            raise

    def release(self, channel: str) -> None:
        """Drop one reference to ``channel``; the last one unsubscribes (in the background)."""
        task = asyncio.create_task(self._release(channel))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, channel: str) -> None:
        async with self._lock:
            self._refs[channel] -= 1
            if self._refs[channel] > 0:
                return
            self._drop(channel)
            await self._unsubscribe(channel)

    async def _unsubscribe(self, channel: str) -> None:
        started_s = time.monotonic()
        try:
            await self._pubsub.unsubscribe(channel)
            self._leftover.discard(channel)
        except OUTAGE_ERRORS as exc:
            self._leftover.add(channel)
            self.availability.lost(exc, started_s)
        except RedisError as exc:
            self._log_failure(f"could not unsubscribe from {channel}: {exc}")

    async def _unsubscribe_leftovers(self) -> None:
        async with self._lock:
            for channel in list(self._leftover):
                self._leftover.discard(channel)
                if channel not in self._refs:  # not taken again meanwhile
                    await self._unsubscribe(channel)

    def _after_reconnect(self) -> None:
        if self._leftover and self.availability.up:
            task = asyncio.create_task(self._unsubscribe_leftovers())
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    def _drop(self, channel: str) -> None:
        self._refs.pop(channel, None)
        self._handlers.pop(channel, None)
        self._confirmed.pop(channel, None)

    async def _run(self) -> None:
        while True:
            started_s = time.monotonic()
            try:
                message = await self._pubsub.get_message(timeout=None)
            except OUTAGE_ERRORS as exc:
                self.availability.lost(exc, started_s)  # redis-py reconnects and subscribes again
                await asyncio.sleep(RETRY_S)
                continue
            except RedisError as exc:
                self._log_failure(f"pub/sub read failed, retrying: {exc}")
                await asyncio.sleep(RETRY_S)
                continue
            if message is not None:
                self._dispatch(message)
                self._after_reconnect()

    def _dispatch(self, message: dict[str, object]) -> None:
        kind, raw_channel, data = message.get("type"), message.get("channel"), message.get("data")
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "message" and isinstance(data, bytes):
            handler = self._handlers.get(channel)
            if handler is not None:
                try:
                    handler(channel, data)
                except Exception:
                    log.exception("handler of %s failed", channel)

    def _log_failure(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self._logged_at_s >= LOG_INTERVAL_S:
            self._logged_at_s = now_s
            log.warning("redis listener: %s", text)
