"""Batching of live-stream work into the detection pool.

Every session is assigned one lane of the pool when it opens (the lane with the fewest streams), and its
detector lives in that lane's worker. Sessions with new audio are marked ready. Whenever a lane has fewer
than ``batches_per_lane`` calls in flight, the scheduler takes one job from every ready session of that
lane (a session with a job in flight has none to give) and sends them as one batch, one pool call. Audio
that arrives while a stream's job is in flight waits in its ring buffer and goes with the next batch, so
batches grow with load and the per-call overhead is shared by many streams. A lane calls its worker at most
once per dispatch interval, which can grow with the streams the lane serves
(:mod:`server.stream.dispatch_rule`).
"""

from __future__ import annotations

import asyncio
import logging

from server.exceptions import PoolRestarted
from server.pool import DetectionPool
from server.stream.dispatch_rule import DispatchRule
from server.stream.in_worker import Job, JobResult, PackedJobs, run_batch
from server.stream.session import StreamSession

log = logging.getLogger(__name__)

# Calls in flight per lane. One: audio that arrives meanwhile joins the lane's next batch, which then
# carries every stream that has audio instead of trailing the running call by a few streams.
BATCHES_PER_LANE = 1
# uvloop's clock and timers count whole milliseconds (libuv's): a sleep under half a millisecond is a timer
# due at once, and loop.time() stays the same until the next millisecond. A scheduler that slept the rest
# of a lane's interval (0.2 ms of a 3.2 ms interval at 64 streams) woke in every loop iteration until the
# millisecond turned, each time polling and running _dispatch (25 dispatches per batch at 64 streams, where
# one or two are needed). So it sleeps at least one tick, which wakes it at the same millisecond the
# spinning reached, and a wait within float error of zero (two readings of a millisecond clock) is none.
TIMER_TICK_S = 0.001
CLOCK_SLACK_S = 1e-6


def pause_for(wait_s: float) -> float | None:
    """How long to sleep before a lane whose interval ends in ``wait_s`` may go; ``None``: it may go now."""
    if wait_s <= CLOCK_SLACK_S:
        return None
    return max(wait_s, TIMER_TICK_S)

Batch = list[tuple[StreamSession, Job]]


class BatchScheduler:
    """Assigns sessions to lanes and feeds each lane's ready jobs to its worker."""

    def __init__(self, pool: DetectionPool, batches_per_lane: int = BATCHES_PER_LANE,
                 rule: DispatchRule | None = None) -> None:
        self._pool = pool
        lanes = pool.workers
        self.batches_per_lane = max(1, batches_per_lane)
        self.rule = rule or DispatchRule()
        self._ready: list[dict[StreamSession, None]] = [{} for _ in range(lanes)]  # insertion-ordered sets
        self._forget: list[list[str]] = [[] for _ in range(lanes)]  # detector keys of ended streams
        self._streams = [0] * lanes
        self._in_flight = [0] * lanes
        self._interval_s = [self.rule.interval_s(0)] * lanes  # each lane's dispatch interval, by its streams
        self._last_s = [float("-inf")] * lanes  # loop time of each lane's last dispatch
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.jobs = 0

    def assign(self) -> int:
        """The lane for a new stream: the one with the fewest streams."""
        lane = self._streams.index(min(self._streams))
        self._streams[lane] += 1
        self._interval_s[lane] = self.rule.interval_s(self._streams[lane])
        return lane

    def release(self, lane: int, detector_key: str | None) -> None:
        """A stream of ``lane`` ended; its worker may still hold a detector under ``detector_key``."""
        self._streams[lane] -= 1
        self._interval_s[lane] = self.rule.interval_s(self._streams[lane])
        if detector_key is not None:
            self._forget[lane].append(detector_key)

    def interval_s(self, lane: int) -> float:
        """``lane``'s current dispatch interval, in seconds."""
        return self._interval_s[lane]

    def notify(self, session: StreamSession) -> None:
        """``session`` may have work (new audio, a stop, a retry).

        While its lane has no room for another call, the scheduler is not woken: the call's return wakes it
        (and each chunk that arrived meanwhile would have woken it once for nothing)."""
        lane = session.lane
        self._ready[lane][session] = None
        if self._in_flight[lane] < self.batches_per_lane:
            self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                pause_s = self._dispatch(loop.time())
                while pause_s is not None:  # a lane dispatched a moment ago: more streams join its batch
                    await asyncio.sleep(pause_s)
                    pause_s = self._dispatch(loop.time())
        finally:
            for task in self._tasks:
                task.cancel()

    def _dispatch(self, now_s: float) -> float | None:
        """Send each lane's ready jobs if the lane has room and its interval has passed.

        Returns the seconds until a lane that still waits may go, or ``None`` if none waits on its
        interval (a lane without room goes when its call returns and wakes the scheduler).
        """
        pause_s: float | None = None
        for lane, ready in enumerate(self._ready):
            if not ready or self._in_flight[lane] >= self.batches_per_lane:
                continue
            wait_s = pause_for(self._last_s[lane] + self._interval_s[lane] - now_s)
            if wait_s is not None:
                pause_s = wait_s if pause_s is None else min(pause_s, wait_s)
                continue
            self._ready[lane] = {}
            batch: Batch = []
            for session in ready:
                job = session.take_job()
                if job is not None:
                    batch.append((session, job))
            if not batch:
                continue
            self._last_s[lane] = now_s
            forget, self._forget[lane] = self._forget[lane], []
            self._in_flight[lane] += 1
            task = asyncio.create_task(self._run(lane, batch, forget))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return pause_s

    async def _run(self, lane: int, batch: Batch, forget: list[str]) -> None:
        try:
            results = await self._pool.run_on(lane, run_batch, PackedJobs([job for _, job in batch]), forget)
        except PoolRestarted:
            for session, job in batch:
                session.pool_restarted(job)
        except Exception as exc:  # e.g. a job that cannot cross to the worker
            log.exception("a batch of %d stream jobs failed", len(batch))
            for session, job in batch:
                session.complete(job, JobResult([], None, f"{type(exc).__name__}: {exc}"))
        else:
            self.batches += 1
            self.jobs += len(batch)
            for (session, job), result in zip(batch, results, strict=True):
                session.complete(job, result)
        finally:
            self._in_flight[lane] -= 1
            self._wake.set()
