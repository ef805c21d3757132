"""Round trip of a call into a worker process: the detection pool's lane against a ProcessPoolExecutor.

Usage::

    .venv/bin/python bench/pool_rtt.py [--calls 2000] [--streams 128]

Both run one worker process (forkserver), in the same run, on a uvloop event loop:

- ``executor``: ``loop.run_in_executor(ProcessPoolExecutor(max_workers=1), fn, *args)``, what the pool
  was before (each call and each answer pass through the executor's two threads in the server);
- ``lane``: :meth:`DetectionPool.run_on`, whose event loop writes the call and reads the answer itself.

Calls run one after another: ``trivial`` (``abs(-1)``) and ``batch`` (``--streams`` live-stream jobs,
:class:`~server.stream.in_worker.Job`, of 20 ms of 48 kHz float32 each, a lane's batch under load, answered
with their total length). Through the lane a job's audio crosses in the lane's shared arena; through the
executor, inside the pickle.
The event loop does nothing else meanwhile; in a busy server the executor's threads also wait for the
GIL (see ``bench/stream_load.py`` for the whole server under load). Reported: p50/p99 round trip (µs)
and the server process's CPU time per call (µs, every thread), and the ratios executor / lane.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.pool import DetectionPool
from server.stream.in_worker import Job

BLOCK_BYTES = 960 * 4  # 20 ms of 48 kHz mono float32


def total_frames(jobs: list[Job]) -> int:
    return sum(job.frames for job in jobs)


async def measure(call: Callable[[Callable[..., Any], tuple[Any, ...]], Awaitable[Any]],
                  fn: Callable[..., Any], args: tuple[Any, ...], calls: int) -> dict[str, float]:
    for _ in range(20):  # warm up
        await call(fn, args)
    took = []
    cpu0 = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await call(fn, args)
        took.append(time.perf_counter() - start)
    cpu_us = (time.process_time() - cpu0) / calls * 1e6
    return {"p50_us": float(np.percentile(took, 50)) * 1e6, "p99_us": float(np.percentile(took, 99)) * 1e6,
            "cpu_us": cpu_us}


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
    pool = DetectionPool(1)
    await pool.start()
    await loop.run_in_executor(executor, os.getpid)

    async def via_executor(fn: Callable[..., Any], fn_args: tuple[Any, ...]) -> Any:
        return await loop.run_in_executor(executor, fn, *fn_args)

    async def via_lane(fn: Callable[..., Any], fn_args: tuple[Any, ...]) -> Any:
        return await pool.run_on(0, fn, *fn_args)

    jobs = [Job(f"stream-{i}/0", 48000, 1, "<f4", None, bytes(BLOCK_BYTES), 0.0) for i in range(args.streams)]
    cases: list[tuple[str, Callable[..., Any], tuple[Any, ...], int]] = [
        ("trivial", abs, (-1,), args.calls), ("batch", total_frames, (jobs,), max(1, args.calls // 4))]
    print(f"batch = {args.streams} live-stream jobs of {BLOCK_BYTES} bytes of audio")
    print(f"{'case':>8} {'via':>9} {'p50 µs':>9} {'p99 µs':>9} {'cpu µs':>9}")
    try:
        for name, fn, fn_args, calls in cases:
            results = {}
            for via, call in (("executor", via_executor), ("lane", via_lane)):
                results[via] = row = await measure(call, fn, fn_args, calls)
                print(f"{name:>8} {via:>9} {row['p50_us']:9.1f} {row['p99_us']:9.1f} {row['cpu_us']:9.1f}")
            ratios = {key: results["executor"][key] / results["lane"][key] for key in results["lane"]}
            print(f"{name:>8} {'ratio':>9} "
                  + " ".join(f"{ratios[k]:8.1f}×" for k in ("p50_us", "p99_us", "cpu_us")))
    finally:
        executor.shutdown()
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=128)
    uvloop.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
