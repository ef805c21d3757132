"""Live-stream load: onset latency, capacity and memory per stream of a real server under real-time load.

Usage::

    .venv/bin/python bench/stream_load.py [--steps 1,16,64,128,256,384] [--duration-s 10] [--procs 1]
                                          [--workers 2] [--click-phases 25]
                                          [--json bench/results/stream_load.json]

The server runs as a subprocess (``python run.py --port 0 ...``); the load generator runs in ``--procs``
processes of its own, each connection a lean WebSocket client (:mod:`bench.wire_ws`). Each stream sends
48 kHz mono float32 in 20 ms chunks, paced in real time on an absolute schedule (start phases spread over
one chunk period), with a click every ``--click-every-s``.
Live streams are independent performers, so their clicks are spread too: stream ``j`` plays click track
``j mod --click-phases``, the tracks' clicks spread evenly over one click period. ``--click-phases 1``
gives every stream the same clicks at the same moments: every stream's onset is then due within one
chunk period, twice a second, a burst no real set of streams produces (the worst case).

- Latency of an onset: its event's receive time minus the send time of the chunk that completes the
  detector's look-ahead for it. That chunk is found exactly by feeding the same chunks to a local
  :class:`OnsetDetector` beforehand: it is the chunk after which the detector first returns the onset
  (at most ``latency_ms``, the detector's algorithmic latency, after the onset). p50/p99 over every onset.
- Capacity: steps go up until one fails; a step passes when p99 <= ``--p99-limit-ms`` (50), no audio was
  dropped, and no click went unreported.
- Memory: resident set size of the server and all of its descendant processes (the pool), from /proc,
  idle before the first step and while each step's streams run; per stream = (loaded - idle) / streams.
- CPU: percent of one core used by the server process, its pool, the generators, and everything else on
  the machine (``others``: a shared machine's other load skews every figure) during the step, from /proc;
  and ``steal``, the time the host withheld from this virtual machine's cores while they had work (100 %
  stolen is one core fewer).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import heapq
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import descendants, rss_bytes, start_server
from bench.wire_ws import BINARY, WireSocket, masked_frame
from server.dsp import DetectorSettings, OnsetDetector

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 48000
CHUNK_S = 0.02
CHUNK_FRAMES = round(SAMPLE_RATE * CHUNK_S)
CLICK_LEN = 16  # samples
MATCH_S = 0.025  # a reported onset within this of a click is that click's onset
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- Server process and /proc ----------------------------------------------------------------------------


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds so far over every core of the machine (from /proc/stat): (busy, stolen). Stolen is
    time a virtual machine's cores were ready to run but the host ran something else."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLOCK_TICKS


# --- Load generator (runs in its own processes) ----------------------------------------------------------


@dataclass
class ShardResult:
    latencies_ms: list[float] = field(default_factory=list)
    clicks: int = 0
    missed: int = 0
    extra: int = 0
    untimed: int = 0  # onsets the local detector did not give (so no completing chunk to time from)
    dropped_s: float = 0.0
    warnings: int = 0
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0


def completing_chunks(samples: np.ndarray, settings: dict[str, Any] | None = None) -> list[tuple[float, int]]:
    """(onset time, index of the chunk after which a detector fed chunk by chunk first reports it), with
    the stream settings ``settings`` (the defaults if None)."""
    detector = OnsetDetector(SAMPLE_RATE, 1, settings=DetectorSettings.from_mapping(settings or {}))
    found = []
    for k in range(0, len(samples) // CHUNK_FRAMES):
        for onset in detector.process(samples[k * CHUNK_FRAMES:(k + 1) * CHUNK_FRAMES]):
            found.append((onset.time, k))
    return found


def click_pattern(every_s: float, phase_s: float, total_s: float) -> tuple[np.ndarray, list[float]]:
    frames = round(total_s * SAMPLE_RATE)
    frames -= frames % CHUNK_FRAMES
    samples = np.zeros(frames, dtype=np.float32)
    times = []
    t = phase_s
    while t < total_s - 0.3:
        start = round(t * SAMPLE_RATE)
        samples[start:start + CLICK_LEN] = 0.8
        times.append(start / SAMPLE_RATE)
        t += every_s
    return samples, times


class ClickTrack(NamedTuple):
    chunks: list[bytes]  # each 20 ms chunk as a masked binary WebSocket frame, ready to send
    clicks: list[float]
    completing: list[tuple[float, int]]


class LoadStream:
    """One publisher: its chunks, paced by :func:`run_shard`, and a receiver matching onsets to clicks."""

    def __init__(self, track: ClickTrack) -> None:
        self.chunks = track.chunks
        self.clicks = track.clicks
        self.completing = track.completing
        self.latency_s = 0.0
        self.sent_at: list[float] = []
        self.onsets: list[tuple[float, float]] = []  # (onset time, receive time)
        self.dropped_s = 0.0
        self.warnings = 0
        self.errors: list[str] = []
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()

    def on_text(self, text: str, received_at: float) -> None:
        event = json.loads(text)
        kind = event["type"]
        if kind == "onset":
            self.onsets.append((event["time"], received_at))
        elif kind == "status":
            self.dropped_s = max(self.dropped_s, event["dropped_s"])
        elif kind == "warning":
            self.warnings += 1
        elif kind == "error":
            self.errors.append(event["code"])
        elif kind == "started" and not self.started.done():
            self.started.set_result(event)
        elif kind == "stopped" and not self.stopped.done():
            self.stopped.set_result(None)

    def score(self, result: ShardResult) -> None:
        sent_s = len(self.sent_at) * CHUNK_S
        played = [c for c in self.clicks if c + self.latency_s + CHUNK_S < sent_s]
        result.clicks += len(played)
        matched = set()
        for onset_s, received in self.onsets:
            near = [c for c in self.clicks if abs(c - onset_s) <= MATCH_S]
            if not near:
                result.extra += 1
                continue
            if near[0] not in played:
                continue  # a click too close to the end to be owed, reported anyway
            matched.add(near[0])
            chunks = [k for t, k in self.completing if abs(t - onset_s) <= 0.001]
            if chunks and chunks[0] < len(self.sent_at):
                result.latencies_ms.append((received - self.sent_at[chunks[0]]) * 1000.0)
            else:
                result.untimed += 1
        result.missed += len(played) - len(matched)
        result.dropped_s += self.dropped_s
        result.warnings += self.warnings
        result.errors += self.errors


@functools.cache
def click_tracks(click_every_s: float, click_phases: int, total_s: float) -> list[ClickTrack]:
    """``click_phases`` click tracks, their first clicks spread evenly over one click period.

    Cached: a generator process makes them once, not in every step (where they would cost CPU time).
    """
    tracks = []
    for k in range(click_phases):
        samples, clicks = click_pattern(click_every_s, 0.137 + k * click_every_s / click_phases, total_s)
        chunks = [masked_frame(BINARY, samples[i:i + CHUNK_FRAMES].tobytes())
                  for i in range(0, len(samples), CHUNK_FRAMES)]
        tracks.append(ClickTrack(chunks, clicks, completing_chunks(samples)))
    return tracks


async def run_shard(url: str, streams: int, duration_s: float, click_every_s: float, click_phases: int,
                    phase_offset: int, phase_count: int) -> ShardResult:
    result = ShardResult()
    tracks = click_tracks(click_every_s, click_phases, duration_s + 1.0)
    # Each stream's index across every shard: it picks the stream's click track and send phase.
    index = [i * phase_count + phase_offset for i in range(streams)]
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    start = json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1, "encoding": "pcm_f32le"})
    load: list[LoadStream] = []
    sockets: list[WireSocket] = []
    for i in range(streams):
        stream = LoadStream(tracks[index[i] % click_phases])
        socket = await WireSocket.connect(host, port, "/api/v3/stream", stream.on_text)
        socket.send_text(start)
        stream.latency_s = float((await asyncio.wait_for(stream.started, 60))["latency_ms"]) / 1000.0
        load.append(stream)
        sockets.append(socket)
    # Phases spread over one chunk period, across every stream of every shard.
    phases = [index[i] / (streams * phase_count) * CHUNK_S for i in range(streams)]
    cpu_start = time.process_time()
    t0 = time.perf_counter() + 0.2
    n_chunks = round(duration_s / CHUNK_S)
    due = sorted((t0 + phases[i], i, 0) for i in range(streams))
    while due:
        at, i, k = due[0]
        delay = at - time.perf_counter()
        if delay > 0:  # the loop's timers tick in milliseconds: a shorter sleep would spin
            await asyncio.sleep(max(delay, 0.001))
        while due and due[0][0] <= time.perf_counter():
            at, i, k = heapq.heappop(due)
            stream = load[i]
            stream.sent_at.append(time.perf_counter())
            sockets[i].send(stream.chunks[k])
            if k + 1 < n_chunks:
                heapq.heappush(due, (t0 + phases[i] + (k + 1) * CHUNK_S, i, k + 1))
    for socket in sockets:
        socket.send_text('{"type":"stop"}')
    await asyncio.wait_for(asyncio.gather(*(stream.stopped for stream in load)), 120)
    result.cpu_s = time.process_time() - cpu_start
    for stream, socket in zip(load, sockets, strict=True):
        stream.score(result)
        socket.close()
    return result


def shard_main(args: tuple[str, int, float, float, int, int, int]) -> dict[str, object]:
    return asdict(uvloop.run(run_shard(*args)))


# --- Orchestration ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_step(url: str, server_pid: int, streams: int, args: argparse.Namespace,
             pool: multiprocessing.pool.Pool, idle_rss: int) -> dict[str, object]:
    procs = max(1, min(args.procs, streams))
    shares = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
    jobs = [(url, n, args.duration_s, args.click_every_s, args.click_phases, i, procs)
            for i, n in enumerate(shares)]
    tree = descendants(server_pid)
    server_cpu0, pool_cpu0, (busy0, steal0) = cpu_s(tree[:1]), cpu_s(tree[1:]), machine_cpu_s()
    pending = pool.map_async(shard_main, jobs)
    time.sleep(args.duration_s * 0.8)  # sample memory while every stream runs
    loaded_rss = rss_bytes(descendants(server_pid))
    shards = [ShardResult(**r) for r in pending.get(timeout=args.duration_s * 10 + 300)]  # type: ignore[arg-type]
    tree = descendants(server_pid)
    busy_s, steal_s = machine_cpu_s()
    busy_pct, steal_pct = 100 * (busy_s - busy0) / args.duration_s, 100 * (steal_s - steal0) / args.duration_s
    server_pct = 100 * (cpu_s(tree[:1]) - server_cpu0) / args.duration_s
    pool_pct = 100 * (cpu_s(tree[1:]) - pool_cpu0) / args.duration_s
    generator_pct = 100 * sum(s.cpu_s for s in shards) / args.duration_s
    latencies = [x for s in shards for x in s.latencies_ms]
    step = {
        "streams": streams,
        "onsets_timed": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else float("nan"),
        "clicks": sum(s.clicks for s in shards),
        "missed": sum(s.missed for s in shards),
        "extra": sum(s.extra for s in shards),
        "untimed": sum(s.untimed for s in shards),
        "dropped_s": round(sum(s.dropped_s for s in shards), 3),
        "warnings": sum(s.warnings for s in shards),
        "errors": sorted({e for s in shards for e in s.errors}),
        "server_rss_mb": round(loaded_rss / 2**20, 1),
        "rss_per_stream_kb": round((loaded_rss - idle_rss) / streams / 1024, 1),
        "server_cpu_pct": round(server_pct, 1),
        "pool_cpu_pct": round(pool_pct, 1),
        "generator_cpu_pct": round(generator_pct, 1),
        # Everything else the machine did meanwhile (other users' work skews a shared machine's figures).
        "others_cpu_pct": round(max(0.0, busy_pct - server_pct - pool_pct - generator_pct), 1),
        "steal_cpu_pct": round(steal_pct, 1),
    }
    step["passed"] = (step["p99_ms"] <= args.p99_limit_ms and step["dropped_s"] == 0  # type: ignore[operator]
                      and step["missed"] == 0 and not step["errors"])
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,16,64,128,256,384,512")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--workers", type=int, default=2, help="the server's pool processes")
    parser.add_argument("--click-every-s", type=float, default=0.5)
    parser.add_argument("--click-phases", type=int, default=25,
                        help="click tracks, their clicks spread over one click period (1: every stream "
                             "clicks at the same moments)")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    parser.add_argument("--server-arg", action="append", default=[], help="extra run.py option (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    server, url = start_server(["--workers", str(args.workers), "--max-streams", "4096",
                                 "--max-streams-per-client", "4096", "--idle-timeout-s", "120",
                                 "--log-level", "WARNING", *args.server_arg])
    results: list[dict[str, object]] = []
    try:
        time.sleep(1.0)
        idle_rss = rss_bytes(descendants(server.pid))
        print(f"server {url} pid {server.pid}; idle RSS (server + pool) {idle_rss / 2**20:.1f} MiB; "
              f"{args.duration_s:g} s per step, {args.procs} generator process(es)", flush=True)
        header = ("streams", "p50_ms", "p99_ms", "max_ms", "clicks", "missed", "extra", "dropped_s",
                  "rss_per_stream_kb", "server_cpu_pct", "pool_cpu_pct", "generator_cpu_pct",
                  "others_cpu_pct", "steal_cpu_pct", "passed")
        print(" ".join(f"{h:>10}" for h in header), flush=True)
        with multiprocessing.get_context("spawn").Pool(args.procs) as pool:
            for streams in (int(s) for s in args.steps.split(",")):
                step = run_step(url, server.pid, streams, args, pool, idle_rss)
                results.append(step)
                print(" ".join(f"{step[h]!s:>10}" for h in header), flush=True)
                if step["errors"]:
                    print("   errors:", step["errors"], flush=True)
                if not step["passed"] and not args.keep_going:
                    break
                time.sleep(1.0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    passing = [int(r["streams"]) for r in results if r["passed"]]  # type: ignore[call-overload]
    print(f"capacity: {max(passing) if passing else 0} streams with p99 <= {args.p99_limit_ms:g} ms and "
          "no audio dropped", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "steps": results},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
