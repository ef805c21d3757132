"""Waiting for a condition in tests: poll until it holds, or fail after a generous timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0  # generous: the suite may run on a loaded 2-core machine, beside Redis retries


async def until(check: Callable[[], Awaitable[T]], timeout_s: float = DEFAULT_TIMEOUT_S,
                interval_s: float = 0.02) -> T:
    """Await ``check()`` every ``interval_s`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s"
        await asyncio.sleep(interval_s)
