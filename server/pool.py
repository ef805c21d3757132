"""The process pool that runs all detection work off the event loop.

One :class:`DetectionPool` per server. Live streams and file jobs submit small units of work (a block of
audio for a batch of streams, a chunk of a file) so that neither can hold the pool for long. When a worker
process dies the executor is rebuilt and the caller sees :class:`PoolRestarted`, so it can re-initialise its
state instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from server.exceptions import PoolRestarted

log = logging.getLogger(__name__)

T = TypeVar("T")


def _warm_up() -> int:
    """Import the detector in the worker so the first real task pays no import cost."""
    import server.dsp  # noqa: F401

    return os.getpid()


class DetectionPool:
    """A rebuildable :class:`ProcessPoolExecutor` with an awaitable ``run``."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.rebuilds = 0
        self._executor = self._new_executor()
        self._closed = False

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context)

    async def start(self) -> list[int]:
        """Start every worker process now; returns their pids."""
        return list(await asyncio.gather(*(self.run(_warm_up) for _ in range(self.workers))))

    def worker_pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a worker process.

        Raises :class:`PoolRestarted` if the worker died; the pool is then already rebuilt.
        """
        if self._closed:
            raise RuntimeError("the detection pool is closed")
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, *args)
        except BrokenProcessPool as exc:
            if executor is self._executor and not self._closed:
                log.warning("a detection worker died; rebuilding the pool")
                self.rebuilds += 1
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise PoolRestarted("a detection worker died; the pool was rebuilt") from exc

    async def close(self) -> None:
        self._closed = True
        executor = self._executor
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: executor.shutdown(wait=True, cancel_futures=True)
        )
