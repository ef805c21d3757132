"""The process pool that runs all detection work off the event loop.

One :class:`DetectionPool` per server: ``workers`` processes, each in its own *lane*
(:class:`~server.pool.lane.Lane`). Work for a live stream always goes to the stream's lane, so that lane's
worker can keep the stream's detector between calls and only audio and onsets cross between processes
(see :mod:`server.stream.in_worker`); other work (file steps, health checks) goes to the lane with the fewest
calls in flight. Live streams and file jobs submit small units of work (a block of audio for a batch of
streams, a chunk of a file) so that neither can hold a lane for long.

When a worker process dies its lane starts a fresh process and the callers of that lane see
:class:`PoolRestarted`, so they can re-initialise their state instead of hanging. A worker also ends by
itself when the server process that made it dies, even by SIGKILL, so no detection process outlives its
server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TypeVar

from server.exceptions import PoolRestarted
from server.pool.cores import usable_cores
from server.pool.heap import TRIM_EVERY_S
from server.pool.lane import Lane, LaneBroken
from server.pool.policy import SCHED_POLICIES, set_policy

T = TypeVar("T")

__all__ = ["SCHED_POLICIES", "DetectionPool"]


class DetectionPool:
    """``workers`` lanes with an awaitable ``run`` (any lane) and ``run_on`` (one given lane).

    ``workers`` 0 gives one lane per core this process may use (:func:`~server.pool.cores.usable_cores`:
    its CPU affinity, capped by its cgroup's CPU quota), not per core of the machine. Each worker gives its
    freed heap memory back to the system at most every ``heap_trim_s`` (:mod:`server.pool.heap`; 0: never).
    Every worker, a replacement's too, runs ``warm_up`` (when given) as its first call.

    ``sched_policy`` (:data:`~server.pool.policy.SCHED_POLICIES`) is the Linux scheduling policy of every
    worker and, from :meth:`start` on, of the event loop's thread (:mod:`server.pool.policy`).
    """

    def __init__(self, workers: int = 0, heap_trim_s: float = TRIM_EVERY_S,
                 warm_up: Callable[[], object] | None = None, sched_policy: str = "normal") -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 (one per usable core) or more, got {workers}")
        if heap_trim_s < 0:
            raise ValueError(f"heap_trim_s must be 0 (never) or more, got {heap_trim_s}")
        if sched_policy not in SCHED_POLICIES:
            raise ValueError(f"sched_policy must be one of {', '.join(SCHED_POLICIES)}, got {sched_policy!r}")
        self.workers = workers or usable_cores()
        self.sched_policy = sched_policy
        self._lanes = [Lane(index, heap_trim_s, warm_up, sched_policy) for index in range(self.workers)]
        self._closed = False

    @property
    def rebuilds(self) -> int:
        """Worker processes replaced after dying, over every lane."""
        return sum(lane.rebuilds for lane in self._lanes)

    async def start(self) -> list[int]:
        """Start every worker process now and wait until each answers (after its ``warm_up``); returns
        their pids.

        A worker imports the detector (numpy, scipy) before it answers its first call, which takes a few
        hundred milliseconds, and its ``warm_up`` (:func:`server.stream.in_worker.warm_up` in the server)
        runs the code its first streams would otherwise run cold: waiting here keeps both out of the first
        streams' latency.
        """
        if self.sched_policy != "normal":
            set_policy(0, self.sched_policy)  # the calling thread: the event loop's
        return list(await asyncio.gather(*(self.run_on(lane, os.getpid) for lane in range(self.workers))))

    def worker_pids(self, lane: int | None = None) -> list[int]:
        """The worker processes' pids, of every lane or of one."""
        lanes = self._lanes if lane is None else [self._lanes[lane]]
        return sorted(pid for each in lanes for pid in each.worker_pids())

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the worker with the fewest calls in flight (see :meth:`run_on`)."""
        return await self.run_on(self.least_busy(), fn, *args)

    def least_busy(self, prefer: int | None = None) -> int:
        """The lane with the fewest calls in flight: ``prefer`` among equals, else the first."""
        return min(self._lanes, key=lambda lane: (lane.in_flight, lane.index != prefer)).index

    async def run_on(self, lane: int, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the worker of ``lane`` (0 to ``workers - 1``); calls on one lane run in order.

        ``fn`` and ``args`` must pickle. Raises what ``fn`` raised, or :class:`PoolRestarted` if that
        worker died first (its lane is then already starting a fresh one).
        """
        if self._closed:
            raise RuntimeError("the detection pool is closed")
        chosen = self._lanes[lane]
        chosen.in_flight += 1
        try:
            return await chosen.call(fn, *args)
        except LaneBroken as exc:
            raise PoolRestarted(f"detection worker {lane} died; it was replaced") from exc
        finally:
            chosen.in_flight -= 1

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(lane.close() for lane in self._lanes), return_exceptions=True)
