"""A time limit on reading an HTTP request body, and an end to every such read when shutdown begins.

aiohttp sets no limit on how long a body may take: a client sending one byte a second holds its handler
(and a graceful shutdown, which waits for handlers) for as long as it likes. A :class:`BodyClock` times one
body: each read may wait at most ``body_timeout_s`` (an idle gap), and once the body is older than that its
average rate must be at least ``min_body_bytes_per_s``. Either failure raises :class:`BodyTimeout`
(answered 408 ``body_timeout``). When shutdown begins, :func:`setup`'s hook ends every read in progress
with :class:`BodyTimeout` whose ``shutting_down`` is set (answered 503 ``shutting_down``), so a stalled
upload never holds the shutdown. See docs/protocol.md, "Whole-file analysis".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from aiohttp import web

from server.config import Config
from server.protocol.errors import json_error

T = TypeVar("T")


class BodyTimeout(Exception):
    """The request body came too slowly, or shutdown began while it was read."""

    def __init__(self, message: str, *, shutting_down: bool = False) -> None:
        super().__init__(message)
        self.shutting_down = shutting_down


class BodyClocks:
    """The bodies being read now, so that shutdown can end them; one per application."""

    def __init__(self) -> None:
        self.clocks: set[BodyClock] = set()
        self.shutting_down = False

    def stop_all(self) -> None:
        self.shutting_down = True
        for clock in list(self.clocks):
            clock.stop()

    @contextlib.contextmanager
    def clock(self, config: Config) -> Iterator[BodyClock]:
        clock = BodyClock(config.body_timeout_s, config.min_body_bytes_per_s, self.shutting_down)
        self.clocks.add(clock)
        try:
            yield clock
        finally:
            self.clocks.discard(clock)


BODY_CLOCKS = web.AppKey("body_clocks", BodyClocks)


class BodyClock:
    """Times the reads of one request body (see the module docstring)."""

    def __init__(self, timeout_s: float, min_bytes_per_s: int, stopped: bool = False) -> None:
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.started_s = asyncio.get_running_loop().time()
        self.received_bytes = 0
        self.stopped = stopped
        self._reading: asyncio.Timeout | None = None

    def stop(self) -> None:
        """End the read in progress, and any later one, at once (shutdown)."""
        self.stopped = True
        if self._reading is not None:
            self._reading.reschedule(asyncio.get_running_loop().time())

    async def read(self, pending: Awaitable[T]) -> T:
        """Await ``pending`` (one read of the body) within the limits."""
        if self.stopped:
            raise BodyTimeout("the server is shutting down", shutting_down=True)
        try:
            async with asyncio.timeout(self.timeout_s or None) as reading:
                self._reading = reading
                result = await pending
        except TimeoutError:
            if self.stopped:
                raise BodyTimeout("the server is shutting down", shutting_down=True) from None
            raise BodyTimeout(f"the request body sent nothing for {self.timeout_s:g} s "
                              "(body_timeout_s)") from None
        finally:
            self._reading = None
        return result

    def count(self, n_bytes: int) -> None:
        """Add ``n_bytes`` received; raise :class:`BodyTimeout` if the body is too slow on average."""
        self.received_bytes += n_bytes
        if not self.timeout_s:
            return
        elapsed_s = asyncio.get_running_loop().time() - self.started_s
        if elapsed_s > self.timeout_s and self.received_bytes < self.min_bytes_per_s * elapsed_s:
            raise BodyTimeout(f"the request body arrives at {self.received_bytes / elapsed_s:.0f} bytes/s "
                              f"after {elapsed_s:.0f} s, slower than min_body_bytes_per_s "
                              f"({self.min_bytes_per_s})")


async def _stop_reads(app: web.Application) -> None:
    app[BODY_CLOCKS].stop_all()


SHUTTING_DOWN_RETRY_AFTER_S = "5"  # suggested wait, seconds, when a body is cut short by shutdown


def refusal(exc: BodyTimeout) -> web.Response:
    """The answer to a body that did not arrive in time: 408 ``body_timeout``, or 503 ``shutting_down`` (with
    ``Retry-After``) when shutdown cut it short; either way the connection is closed after it."""
    if exc.shutting_down:
        response = json_error(503, "shutting_down", str(exc), {"Retry-After": SHUTTING_DOWN_RETRY_AFTER_S})
    else:
        response = json_error(408, "body_timeout", str(exc))
    response.force_close()
    return response


def setup(app: web.Application) -> None:
    """Give ``app`` its body clocks; shutdown ends every body read in progress."""
    app[BODY_CLOCKS] = BodyClocks()
    app.on_shutdown.append(_stop_reads)
