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

    def __init__(self, pool: DetectionPool, max_batches: int) -> None:
        self._pool = pool
        self.max_batches = max(1, max_batches)
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
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._dispatch()
        finally:
            for task in self._tasks:
                task.cancel()

    def _dispatch(self) -> None:
        free = self.max_batches - self._in_flight
        if free <= 0 or not self._ready:
            return
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
