"""``run.py`` with timestamps along an onset's path (bench/onset_path.py starts it; not for production).

Wraps, in this process: a session's ``feed`` (the chunk's audio handed over by the socket's reader), the
scheduler's dispatch (the job taken), the pool call (just before the call is pickled and written to the
lane's pipe), the answer's arrival (the lane's pipe read), the batch's resumption, the session's
``complete`` (events built and queued) and the onset event's send; in the worker (through a batch function
of this module, which the lane's worker imports by name) the start and end of ``run_batch``. All stamps are
``time.perf_counter()`` (CLOCK_MONOTONIC: one clock for every process of the machine). After the
shutdown that SIGTERM starts, the stamps of every job whose result held an onset are written as JSON to
``$ONSET_PATH_OUT``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.stream import in_worker


class TimedResults(list):  # type: ignore[type-arg]
    """A batch's results with the worker's start and end times (a list subclass: pickles its attributes)."""

    worker_start: float = 0.0
    worker_end: float = 0.0


def timed_batch(jobs: Any, forget: Any = ()) -> TimedResults:
    """:func:`server.stream.in_worker.run_batch`, timed in the worker."""
    start = time.perf_counter()
    results = TimedResults(in_worker.run_batch(jobs, forget))
    results.worker_start, results.worker_end = start, time.perf_counter()
    return results


def install(records: list[dict[str, float]]) -> None:
    from server.pool import DetectionPool, lane
    from server.protocol import codec
    from server.stream import session

    feed0, take0, complete0 = (session.StreamSession.feed, session.StreamSession.take_job,
                               session.StreamSession.complete)
    run_on0, answered0, send0 = DetectionPool.run_on, lane.Lane._answered, codec.send
    jobs: dict[int, dict[str, float]] = {}
    pending_sends: dict[int, dict[str, float]] = {}
    last: dict[str, float] = {}

    def feed(self: Any, frames: Any) -> None:
        self._probe_fed = time.perf_counter()
        feed0(self, frames)

    def take_job(self: Any) -> Any:
        job = take0(self)
        if job is not None:
            jobs[id(job)] = {"fed": getattr(self, "_probe_fed", 0.0), "taken": time.perf_counter()}
        return job

    import bench.onset_path_server as importable  # the worker finds the batch function by this name

    async def run_on(self: Any, lane_index: int, fn: Any, *args: Any) -> Any:
        called = time.perf_counter()
        if fn is in_worker.run_batch:
            fn = importable.timed_batch
        results = await run_on0(self, lane_index, fn, *args)
        resumed = time.perf_counter()
        if isinstance(results, importable.TimedResults):
            last.update(called=called, resumed=resumed, worker_start=results.worker_start,
                        worker_end=results.worker_end)
        return results

    def answered(self: Any, worker: Any, payload: bytes) -> None:
        last["answered"] = time.perf_counter()
        answered0(self, worker, payload)

    def complete(self: Any, job: Any, result: Any) -> None:
        start = time.perf_counter()
        complete0(self, job, result)
        stamps = jobs.pop(id(job), None)
        if stamps is not None and result.onsets:
            record = {**stamps, **last, "complete_start": start, "complete_end": time.perf_counter(),
                      "batch_jobs": last.get("jobs", 0.0)}
            records.append(record)
            pending_sends[id(self)] = record

    async def send(ws: Any, codec_name: Any, message: Any) -> None:
        await send0(ws, codec_name, message)
        if message.get("type") == "onset":
            sent = time.perf_counter()
            for record in pending_sends.values():
                if "sent" not in record and record["complete_end"] <= sent:
                    record["sent"] = sent
                    break

    session.StreamSession.feed = feed  # type: ignore[method-assign]
    session.StreamSession.take_job = take_job  # type: ignore[method-assign]
    session.StreamSession.complete = complete  # type: ignore[method-assign]
    DetectionPool.run_on = run_on  # type: ignore[method-assign]
    lane.Lane._answered = answered  # type: ignore[method-assign]
    codec.send = send


def main() -> int:
    records: list[dict[str, float]] = []
    install(records)
    from server.cli.main import main as run

    try:
        return run(sys.argv[1:])
    finally:  # after the graceful shutdown that SIGTERM starts
        Path(os.environ["ONSET_PATH_OUT"]).write_text(json.dumps(records))


if __name__ == "__main__":
    sys.exit(main())
