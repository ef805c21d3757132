"""Whether this process can reach Redis now: one shared verdict, logged once per outage.

Every Redis call made for a request goes through :meth:`Availability.guard`. A call that fails with a
connection error or a timeout — after the client's own retries, which ride out a restart of a fraction of
a second — marks Redis *down*: one warning is logged, and from then on guarded calls fail at once with
:class:`~server.exceptions.StorageUnavailable` (answered 503 / close 1013) instead of each waiting out the
retries. A background probe pings Redis until it answers, marks it *up* again and logs once. Background
loops (the pub/sub listener, the event outbox, the job queue) report their failures with :meth:`lost`, so
an outage is logged once whichever part notices it first.

A Redis *reply* error (a script error, ``NOGROUP``...) says nothing about reachability and passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.exceptions import StorageUnavailable
from server.scale.client import Redis

log = logging.getLogger(__name__)

# What an unreachable Redis raises: redis-py's connection and timeout errors (Redis loading its data after
# a restart is a connection error too), and the socket's own (OSError covers asyncio's TimeoutError).
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

PROBE_INTERVAL_S = 0.5  # pause between two pings while Redis is down
PROBE_TIMEOUT_S = 2.0  # one ping (with the client's retries) may take this long
UNAVAILABLE_MESSAGE = "the service's shared storage (Redis) cannot be reached; try again shortly"


class Availability:
    """Redis reachability for one client (one process). ``describe`` names Redis in the two log lines;
    ``effect`` says in the warning what the outage means for this process."""

    def __init__(self, client: Redis, describe: str = "Redis",
                 effect: str = "waiting for it to answer") -> None:
        self.client = client
        self.describe = describe
        self.effect = effect
        self.outages = 0  # outages noticed since start
        self._down_since_s: float | None = None  # monotonic time the current outage was noticed
        self._up_since_s = time.monotonic()
        self._probe: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._down_since_s is None

    def down_for_s(self) -> float:
        """How long the current outage has lasted (0 while Redis is up)."""
        return 0.0 if self._down_since_s is None else time.monotonic() - self._down_since_s

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` while Redis is known to be down."""
        if self._down_since_s is not None:
            raise StorageUnavailable(UNAVAILABLE_MESSAGE)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around Redis calls: refuse at once while Redis is down; turn an outage error into
        :class:`StorageUnavailable` (noting the outage)."""
        self.check()
        started_s = time.monotonic()
        try:
            yield
        except OUTAGE_ERRORS as exc:
            self.lost(exc, started_s)
            raise StorageUnavailable(UNAVAILABLE_MESSAGE) from exc

    def lost(self, exc: BaseException, started_s: float | None = None) -> None:
        """A call begun at ``started_s`` (monotonic) met ``exc``: note an outage unless one is already
        known, or Redis has answered again since that call began (it failed on the old outage)."""
        if self._down_since_s is not None or (started_s is not None and started_s < self._up_since_s):
            log.debug("redis still unavailable: %s", exc)
            return
        self._down_since_s = time.monotonic()
        self.outages += 1
        log.warning("%s cannot be reached (%s): %s", self.describe, exc, self.effect)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._until_up(), name="redis-probe")

    async def _until_up(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await asyncio.wait_for(self.client.ping(), PROBE_TIMEOUT_S)
            except (RedisError, OSError) as exc:  # a reply error too: not answering as it should yet
                log.debug("redis probe: %s", exc)
                continue
            down_for_s = self.down_for_s()
            self._down_since_s = None
            self._up_since_s = time.monotonic()
            log.info("%s answers again (unreachable for %.1f s)", self.describe, down_for_s)
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
