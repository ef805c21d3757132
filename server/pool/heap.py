"""Giving freed heap memory back to the system: glibc's ``malloc_trim``, at most once per interval.

glibc keeps the memory a process has freed in its heap for the next allocations, and returns only a free
stretch at the very top of the heap. A burst (streams that fell behind send their audio in jobs of up to
0.5 s, and the event loop and the workers copy it) leaves megabytes free in the middle of the heap, which
stay resident until the process ends. ``malloc_trim(0)`` gives back every whole free page, wherever it is;
the next allocations that need them fault them in again. Measured on a server with 128 live streams: one
call took 0.1-0.7 ms and gave back 1.5-6 MB (``bench/README.md``, "Memory per stream").

The event loop and every pool worker call :meth:`HeapTrim.maybe` (the loop from a periodic task, a worker
after answering a call). Where the C library has no ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_EVERY_S = 1.0  # the least time between two trims of one process (the server option's default)

Trim = Callable[[int], int]


def glibc_trim() -> Trim | None:
    """``malloc_trim`` of this process's C library, or ``None`` if it has none."""
    name = ctypes.util.find_library("c")
    try:
        trim: Trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


class HeapTrim:
    """Trims this process's heap when :meth:`maybe` is called ``every_s`` or more after the last trim.

    ``every_s`` 0 (or a C library without ``malloc_trim``) never trims.
    """

    def __init__(self, every_s: float = TRIM_EVERY_S, trim: Trim | None = None) -> None:
        if every_s < 0:
            raise ValueError(f"the trim interval must be 0 (never) or more seconds, got {every_s}")
        self.every_s = every_s
        self._trim = trim if trim is not None or every_s == 0 else glibc_trim()
        self._last_s = float("-inf")
        self.trims = 0

    @property
    def active(self) -> bool:
        return self._trim is not None and self.every_s > 0

    def maybe(self, now_s: float) -> bool:
        """Trim if an interval has passed since the last trim (``now_s``: a monotonic clock, seconds)."""
        if self._trim is None or self.every_s == 0 or now_s - self._last_s < self.every_s:
            return False
        self._last_s = now_s
        self._trim(0)
        self.trims += 1
        return True


async def trim_every(trim: HeapTrim) -> None:
    """Trim this process's heap every ``trim.every_s`` (the event loop's; cancel to stop)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(trim.every_s)
        trim.maybe(loop.time())
