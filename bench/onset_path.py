"""Where an onset's time goes on its way through our server: per step, from the chunk's arrival to the send.

Usage::

    .venv/bin/python bench/onset_path.py [--streams 1,16] [--duration-s 10] [--beats on|off]
                                         [--lookahead-ms 10] [--server-arg=--workers=1]

Starts ``bench/onset_path_server.py`` (``run.py`` with timestamps) under ``taskset -c 0`` and drives it with
``bench/capacity_per_core.py``'s lean generator on core 1 (20 ms chunks of 48 kHz clicks, one click every
0.5 s per stream), one step per stream count, a fresh server each. For every job whose result held an
onset it prints the median and p99 of each step, in ms, and the client's overhead (send of the completing
chunk to the event's receipt) from the same run:

- ``ingest -> dispatch``: the reader handed the job's newest chunk to its session -> the scheduler took
  the job (waiting for the scheduler's turn, the dispatch interval or a call in flight);
- ``dispatch -> call``: -> the lane's call begins (pickling and the pipe's write follow);
- ``call -> worker start``: pickling, the pipe, and the worker's wake-up;
- ``worker``: ``run_batch`` in the worker (every job of the batch);
- ``worker end -> answer read``: the answer's pickling and pipe, the event loop's wake-up;
- ``answer read -> batch resumes``: unpickling, the future, the scheduler's task step;
- ``resume -> complete``: sessions of the batch completed before this one;
- ``complete``: this session's ``complete`` (events built, queued);
- ``complete -> sent``: the outbox's task step and the socket write.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity_per_core import ShardResult, shard_main
from bench.procs import launch, stop

STEPS = (
    ("ingest -> dispatch", "fed", "taken"),
    ("dispatch -> call", "taken", "called"),
    ("call -> worker start", "called", "worker_start"),
    ("worker", "worker_start", "worker_end"),
    ("worker end -> answer read", "worker_end", "answered"),
    ("answer read -> batch resumes", "answered", "resumed"),
    ("resume -> complete", "resumed", "complete_start"),
    ("complete", "complete_start", "complete_end"),
    ("complete -> sent", "complete_end", "sent"),
    ("ingest -> sent (server)", "fed", "sent"),
)


def run(n: int, args: argparse.Namespace) -> None:
    settings: dict[str, Any] = {} if args.beats == "on" else {"beats": False}
    if args.lookahead_ms is not None:
        settings["lookahead_ms"] = args.lookahead_ms
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stamps.json"
        os.environ["ONSET_PATH_OUT"] = str(out)
        command = ["taskset", "-c", str(args.server_core), sys.executable, "bench/onset_path_server.py",
                   "--port", "0", "--max-streams", "4096", "--max-streams-per-client", "4096",
                   "--log-level", "WARNING", *args.server_arg]
        proc, url = launch(command)
        try:
            time.sleep(1.0)
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                job = (url, proc.pid, "ours", n, args.duration_s, args.client_core, settings)
                shard = ShardResult(**pool.apply(shard_main, (job,)))
        finally:
            stop(proc)
        records = json.loads(out.read_text())
    overhead = shard.overhead_ms
    print(f"\n{n} streams, beats {args.beats}, settings {settings}: {len(records)} onset jobs; client "
          f"overhead p50 {np.percentile(overhead, 50):.2f} p99 {np.percentile(overhead, 99):.2f} ms, "
          f"from the onset p50 {np.percentile(shard.from_onset_ms, 50):.2f} "
          f"p99 {np.percentile(shard.from_onset_ms, 99):.2f} ms; errors {sorted(set(shard.errors))}")
    for name, start, end in STEPS:
        values = [1000.0 * (r[end] - r[start]) for r in records if start in r and end in r]
        if values:
            print(f"  {name:30s} p50 {np.percentile(values, 50):7.3f}  p90 {np.percentile(values, 90):7.3f}  "
                  f"p99 {np.percentile(values, 99):7.3f} ms  ({len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,16")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--beats", choices=("on", "off"), default="on")
    parser.add_argument("--lookahead-ms", type=float, default=None)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--server-arg", action="append", default=[])
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}", flush=True)
    for n in (int(s) for s in args.streams.split(",") if s):
        run(n, args)
    print(f"load average {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
