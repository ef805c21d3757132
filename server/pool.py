"""The process pool that runs all detection work off the event loop.

One :class:`DetectionPool` per server: ``workers`` processes, each behind its own single-process
:class:`ProcessPoolExecutor` (a *lane*). Work for a live stream always goes to the stream's lane, so
that lane's worker can keep the stream's detector between calls and only audio and onsets cross between
processes (see :mod:`server.stream.work`); other work (file steps, health checks) goes to the lane with
the fewest calls in flight. Live streams and file jobs submit small units of work (a block of audio for
a batch of streams, a chunk of a file) so that neither can hold a lane for long.

When a worker process dies its lane is rebuilt with a fresh process and the caller sees
:class:`PoolRestarted`, so it can re-initialise its state instead of hanging. A worker also ends by
itself when the server process that made it dies, even by SIGKILL, so no detection process outlives its
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from server.exceptions import PoolRestarted

log = logging.getLogger(__name__)

T = TypeVar("T")


def _exit_with(server_pid: int) -> None:
    """In a worker: end this process as soon as the server process ``server_pid`` has ended."""
    try:
        handle = os.pidfd_open(server_pid)
    except OSError:  # already gone (or no pidfd support): nothing to serve
        os._exit(0)
    select.select([handle], [], [])  # a pidfd becomes readable when its process ends
    os._exit(0)


def _init_worker(server_pid: int) -> None:
    """Worker start-up: import the detector now, and watch the server so as not to outlive it."""
    import server.dsp  # noqa: F401  # the first real task pays no import cost

    threading.Thread(target=_exit_with, args=(server_pid,), name="server-watch", daemon=True).start()


class Lane:
    """One worker process behind a single-process executor, rebuilt when the process dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.in_flight = 0
        self.rebuilds = 0
        self.executor = self._new_executor()

    @staticmethod
    def _new_executor() -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_init_worker,
                                   initargs=(os.getpid(),))

    def worker_pids(self) -> list[int]:
        processes = getattr(self.executor, "_processes", None) or {}
        return sorted(processes)

    def rebuild(self, broken: ProcessPoolExecutor) -> None:
        """Replace ``broken`` (if it is still this lane's executor) with a fresh one."""
        if broken is self.executor:
            log.warning("detection worker %d died; starting a new one", self.index)
            self.rebuilds += 1
            self.executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)


class DetectionPool:
    """``workers`` lanes with an awaitable ``run`` (any lane) and ``run_on`` (one given lane)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._lanes = [Lane(index) for index in range(workers)]
        self._closed = False

    @property
    def rebuilds(self) -> int:
        """Worker processes replaced after dying, over every lane."""
        return sum(lane.rebuilds for lane in self._lanes)

    async def start(self) -> list[int]:
        """Start every worker process now; returns their pids."""
        return list(await asyncio.gather(*(self.run_on(lane, os.getpid) for lane in range(self.workers))))

    def worker_pids(self, lane: int | None = None) -> list[int]:
        """The worker processes' pids, of every lane or of one."""
        lanes = self._lanes if lane is None else [self._lanes[lane]]
        return sorted(pid for each in lanes for pid in each.worker_pids())

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the worker with the fewest calls in flight (see :meth:`run_on`)."""
        lane = min(self._lanes, key=lambda lane: lane.in_flight)
        return await self.run_on(lane.index, fn, *args)

    async def run_on(self, lane: int, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the worker of ``lane`` (0 to ``workers - 1``); calls on one lane run in order.

        Raises :class:`PoolRestarted` if that worker died; its lane is then already rebuilt.
        """
        if self._closed:
            raise RuntimeError("the detection pool is closed")
        chosen = self._lanes[lane]
        executor = chosen.executor
        chosen.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenProcessPool as exc:
            if not self._closed:
                chosen.rebuild(executor)
            raise PoolRestarted(f"detection worker {lane} died; it was replaced") from exc
        finally:
            chosen.in_flight -= 1

    async def close(self) -> None:
        self._closed = True
        executors = [lane.executor for lane in self._lanes]

        def shut_down() -> None:
            for executor in executors:
                with contextlib.suppress(Exception):
                    executor.shutdown(wait=True, cancel_futures=True)

        await asyncio.get_running_loop().run_in_executor(None, shut_down)
