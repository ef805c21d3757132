"""Where a live stream's memory goes: the server's processes one by one, at the steps of capacity_per_core.py.

Usage::

    .venv/bin/python bench/memory_per_stream.py [--steps 1,128,160,192] [--duration-s 10] [--beats on|off]
                                                [--server-arg=--heap-trim-interval-s=0] [--json PATH]

- The same run as ``bench/capacity_per_core.py --servers ours``: ``run.py`` under ``taskset -c 0`` (its pool
  inherits it), the lean generator pinned to core 1, 48 kHz mono ``pcm_f32le`` in 20 ms chunks, each step's
  reading halfway through its pacing, every stream running.
- Per process (the event loop, the forkserver, each pool worker), minus its idle reading (a process that
  was not there idle counts whole), per stream, in KiB: ``VmRSS`` (what capacity_per_core.py sums),
  ``RssAnon`` (its own heap and stacks), ``RssFile`` (pages of files it maps: shared library code, shared
  with every process that runs it), ``RssShmem`` (the pool's shared arena, which both the event loop and
  its worker map, so RSS counts it twice) and ``Pss`` (shared pages divided among the processes mapping
  them); ``arena`` is the arena's resident memory, counted once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity_per_core import REPO, ShardResult, percentile, shard_main, start
from bench.procs import MEMORY_FIELDS, descendants, memory_of

FIELDS = (*MEMORY_FIELDS, "Pss")


def role(pid: int, server_pid: int) -> str:
    """``loop`` for the server process, ``worker`` for a pool worker (a child of the forkserver, whose
    command line it shares), else ``forkserver`` or ``resource_tracker``."""
    if pid == server_pid:
        return "loop"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return "gone"
    if parent != server_pid:
        return "worker"
    return "resource_tracker" if "resource_tracker" in command else "forkserver"


def per_stream(loaded: dict[int, dict[str, int]], idle: dict[int, dict[str, int]], server_pid: int,
               n: int) -> dict[str, dict[str, float]]:
    """KiB per stream added since idle, per role (processes of one role summed) and in ``total``."""
    out: dict[str, dict[str, float]] = {}
    for pid, fields in loaded.items():
        before = idle.get(pid, {})
        part = out.setdefault(role(pid, server_pid), dict.fromkeys(FIELDS, 0.0))
        for name in FIELDS:
            part[name] += (fields.get(name, 0) - before.get(name, 0)) / n
    out["total"] = {name: sum(part[name] for part in list(out.values())) for name in FIELDS}
    return {r: {name: round(value, 1) for name, value in part.items()} for r, part in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,128,160,192")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--beats", choices=("on", "off"), default="on")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--server-arg", action="append", default=[], help="extra run.py option")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    settings: dict[str, Any] = {} if args.beats == "on" else {"beats": False}
    command = [str(REPO / "run.py"), "--port", "0", "--max-streams", "4096", "--max-streams-per-client",
               "4096", "--idle-timeout-s", "120", "--log-level", "WARNING", *args.server_arg]
    print(f"load average {os.getloadavg()}", flush=True)
    proc, url = start(command, args.server_core)
    steps: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        idle = memory_of(descendants(proc.pid))
        arena_idle = idle.get(proc.pid, {}).get("memfd", 0)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            for n in (int(s) for s in args.steps.split(",") if s):
                job = (url, proc.pid, "ours", n, args.duration_s, args.client_core, settings)
                shard = ShardResult(**pool.apply(shard_main, (job,)))
                parts = per_stream(shard.memory, idle, proc.pid, n)
                arena_kb = shard.memory.get(proc.pid, {}).get("memfd", 0)
                step = {"streams": n, "p50_ms": round(percentile(shard.overhead_ms, 50), 1),
                        "p99_ms": round(percentile(shard.overhead_ms, 99), 1), "missed": shard.missed,
                        "dropped_s": round(shard.dropped_s, 3), "errors": sorted(set(shard.errors)),
                        "arena_kb": arena_kb, "arena_kb_per_stream": round((arena_kb - arena_idle) / n, 1),
                        "kb_per_stream": parts}
                steps.append(step)
                print(f"{n} streams: overhead p50 {step['p50_ms']} / p99 {step['p99_ms']} ms, missed "
                      f"{shard.missed}, dropped {step['dropped_s']} s, errors {step['errors']}; arena "
                      f"{arena_kb} KiB resident", flush=True)
                for name, part in parts.items():
                    print(f"  {name:>16}: " + "  ".join(f"{k} {v:8.1f}" for k, v in part.items()), flush=True)
                time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"load average {os.getloadavg()}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "load_avg": os.getloadavg(), "steps": steps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
