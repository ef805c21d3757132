"""Batching of live-stream work into the detection pool.

Sessions with new audio are marked ready. Whenever fewer than ``max_batches`` pool calls are in flight,
the scheduler takes one job from every ready session (a session with a job in flight has none to give)
and sends them as one or more batches, one pool call each. Audio that arrives while a stream's job is in
flight waits in its ring buffer and goes with the next batch, so batches grow with load and the per-call
overhead is shared by many streams.
"""

from __future__ import annotations

import asyncio
import logging

from server.exceptions import PoolRestarted
from server.pool import DetectionPool
from server.stream.session import StreamSession
from server.stream.work import Job, JobResult, run_batch

log = logging.getLogger(__name__)

# Dispatches at most this often: a lone stream is dispatched at once, but under load the streams that
# become ready within this interval share one batch, which costs far less than one pool call each.
DISPATCH_INTERVAL_S = 0.004

Batch = list[tuple[StreamSession, Job]]


def split_batches(jobs: Batch, parts: int) -> list[Batch]:
    """Split ``jobs`` into at most ``parts`` batches of near-equal audio length (largest first, greedy)."""
    parts = max(1, min(parts, len(jobs)))
    if parts == 1:
        return [jobs]
    batches: list[Batch] = [[] for _ in range(parts)]
    loads = [0] * parts
    for item in sorted(jobs, key=lambda item: len(item[1].audio), reverse=True):
        lightest = loads.index(min(loads))
        batches[lightest].append(item)
        loads[lightest] += len(item[1].audio) + 1
    return batches


class BatchScheduler:
    """Feeds ready sessions' jobs to the pool, at most ``max_batches`` pool calls at a time."""

    def __init__(self, pool: DetectionPool, max_batches: int,
                 min_interval_s: float = DISPATCH_INTERVAL_S) -> None:
        self._pool = pool
        self.max_batches = max(1, max_batches)
        self.min_interval_s = min_interval_s
        self._ready: dict[StreamSession, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.jobs = 0

    def notify(self, session: StreamSession) -> None:
        """``session`` may have work (new audio, a stop, a retry)."""
        self._ready[session] = None
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled."""
        loop = asyncio.get_running_loop()
        last_s = -self.min_interval_s
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                pause_s = last_s + self.min_interval_s - loop.time()
                if pause_s > 0:  # dispatched a moment ago: let more streams join the next batch
                    await asyncio.sleep(pause_s)
                if self._dispatch():
                    last_s = loop.time()
        finally:
            for task in self._tasks:
                task.cancel()

    def _dispatch(self) -> bool:
        """Send the ready sessions' jobs if a pool slot is free; whether any batch went."""
        free = self.max_batches - self._in_flight
        if free <= 0 or not self._ready:
            return False
        ready, self._ready = self._ready, {}
        jobs: Batch = []
        for session in ready:
            job = session.take_job()
            if job is not None:
                jobs.append((session, job))
        for batch in split_batches(jobs, free) if jobs else ():
            self._in_flight += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return bool(jobs)

    async def _run(self, batch: Batch) -> None:
        try:
            results = await self._pool.run(run_batch, [job for _, job in batch])
        except PoolRestarted:
            for session, job in batch:
                session.pool_restarted(job)
        except Exception as exc:  # e.g. a job that cannot cross to the worker
            log.exception("a batch of %d stream jobs failed", len(batch))
            for session, job in batch:
                session.complete(job, JobResult(None, [], None, f"{type(exc).__name__}: {exc}"))
        else:
            self.batches += 1
            self.jobs += len(batch)
            for (session, job), result in zip(batch, results, strict=True):
                session.complete(job, result)
        finally:
            self._in_flight -= 1
            self._wake.set()
