"""Streams per core: Transient against a naive aiohttp + aubio server, each confined to one core, same sweep.

Usage::

    .venv/bin/python bench/capacity_per_core.py [--steps 64,128,192,256,320] [--duration-s 10]
                                                [--servers ours,naive[,sink]] [--server-core 0]
                                                [--client-core 1]
                                                [--user-steps 64,128,192] [--server-arg=--workers=1]
                                                [--keep-going] [--json bench/results/capacity_per_core.json]

- Each server runs under ``taskset -c --server-core`` (its pool workers inherit the affinity): ours is
  ``run.py``, the peer is :mod:`bench.naive_aubio_server` (aubio ``hfc``, 512/256, called on the event
  loop). The load generator is one process pinned to ``--client-core``, each connection a lean WebSocket
  client (:mod:`bench.wire_ws`, as ``bench/stream_load.py``). Steps alternate between the servers (ours,
  then the peer, at each stream count), both servers started once.
- Every stream sends 48 kHz mono ``pcm_f32le`` in 20 ms chunks paced in real time on an absolute
  schedule, start phases spread over one chunk period; a click (16 samples at 0.8) every 0.5 s over a
  -60 dBFS noise floor (seeded; aubio drops an onset whose confirming hop is digital silence), click
  tracks spread over the click period as in ``stream_load.py``.
- Overhead of an onset: receive time of its event minus the send time of the chunk that completes the
  server's detector for it (found beforehand by feeding the same chunks to a local detector of the same
  kind: :class:`OnsetDetector` for ours, aubio with the peer's settings for the peer). This is what the
  server adds to its detector's algorithmic latency.
- Latency from the onset: receive time minus the send time of the chunk holding the click's first sample
  (what a performer feels: algorithmic latency plus overhead).
- A step holds when overhead p99 <= ``--p99-limit-ms`` (50), nothing dropped, no click missed, no error.
- CPU per stream: CPU time of the server and its pool while the chunks are paced (from /proc, read by the
  generator before its first chunk and after its last: no connection set-up, no stop) per stream, as
  percent of one core and as microseconds per 20 ms chunk. A server that falls behind gets only its share
  of a busy core and reads several chunks at once, so this is its cost only at steps it held.
  Memory per stream: RSS of the server and its pool halfway through the pacing (read by the generator:
  every stream is running then, however long the set-up took), minus its idle RSS, per stream; the
  event loop's part alone; and the anonymous part alone (``anon_kb_per_stream``, RssAnon: without the
  pages of shared library code that the first streams fault in, about 9 MiB once, and without the pool's
  shared arena, which RSS counts in the server and in its worker).
- ``--servers ours,naive,sink``: ``sink`` is the peer with ``--method none --uvloop``, which reads and
  decodes every chunk and analyses nothing, on uvloop as ours: its CPU per chunk is the floor of an aiohttp
  server's ingest (it "holds" while
  its core is under 90 % busy; it has no onsets, so no latency).
- ``--user-steps``: then our server on every core, driven by the aiohttp client users use
  (:class:`server.client.TransientClient`), generator unpinned: the figure a user of both sees.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import descendants, launch, memory_of, memory_totals
from bench.stream_load import completing_chunks, cpu_s, machine_cpu_s, percentile
from bench.wire_ws import BINARY, WireSocket, masked_frame

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 48000
CHUNK_S = 0.02
CHUNK_FRAMES = round(SAMPLE_RATE * CHUNK_S)
CLICK_LEN = 16
CLICK_EVERY_S = 0.5
CLICK_PHASES = 25
NOISE_DBFS = -60.0
MATCH_S = 0.025
AUBIO = ("hfc", 512, 256)  # the peer's method, window and hop (its defaults)


# --- Click tracks and where each detector completes an onset ---------------------------------------------


def click_track(phase_s: float, total_s: float, seed: int) -> tuple[np.ndarray, list[float]]:
    frames = round(total_s * SAMPLE_RATE)
    frames -= frames % CHUNK_FRAMES
    noise = np.random.default_rng(seed).normal(0.0, 10 ** (NOISE_DBFS / 20), frames)
    samples = noise.astype(np.float32)
    clicks, t = [], phase_s
    while t < total_s - 0.3:
        start = round(t * SAMPLE_RATE)
        samples[start:start + CLICK_LEN] += 0.8
        clicks.append(start / SAMPLE_RATE)
        t += CLICK_EVERY_S
    return samples, clicks


def completing_aubio(samples: np.ndarray, settings: dict[str, Any] | None = None) -> list[tuple[float, int]]:
    import aubio

    method, window, hop = AUBIO
    onset, found = aubio.onset(method, window, hop, SAMPLE_RATE), []
    for start in range(0, len(samples) - hop + 1, hop):
        if onset(np.ascontiguousarray(samples[start:start + hop]))[0]:
            found.append((float(onset.get_last_s()), (start + hop - 1) // CHUNK_FRAMES))
    return found


def completing_nothing(samples: np.ndarray,
                       settings: dict[str, Any] | None = None) -> list[tuple[float, int]]:
    """The sink reports no onsets."""
    return []


COMPLETING = {"ours": completing_chunks, "naive": completing_aubio, "sink": completing_nothing}


@dataclass
class Track:
    samples: np.ndarray
    frames: list[bytes]  # each chunk as a masked binary frame, ready to send
    clicks: list[float]
    completing: list[tuple[float, int]]


def tracks(kind: str, total_s: float, settings: dict[str, Any] | None = None) -> list[Track]:
    made = []
    for k in range(CLICK_PHASES):
        samples, clicks = click_track(0.137 + k * CLICK_EVERY_S / CLICK_PHASES, total_s, seed=1000 + k)
        frames = [masked_frame(BINARY, samples[i:i + CHUNK_FRAMES].tobytes())
                  for i in range(0, len(samples), CHUNK_FRAMES)]
        made.append(Track(samples, frames, clicks, COMPLETING[kind](samples, settings)))
    return made


# --- Load generator (its own process) --------------------------------------------------------------------


@dataclass
class ShardResult:
    overhead_ms: list[float] = field(default_factory=list)
    from_onset_ms: list[float] = field(default_factory=list)
    clicks: int = 0
    missed: int = 0
    extra: int = 0
    untimed: int = 0
    dropped_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0  # the server's and its pool's, while the chunks were paced (no set-up, no stop)
    paced_s: float = 0.0
    rss: int = 0  # the server tree's RSS (bytes) halfway through the pacing, all streams running
    loop_rss: int = 0  # its event loop's alone
    anon: int = 0  # the server tree's anonymous memory (RssAnon) at the same time
    memory: dict[int, dict[str, int]] = field(default_factory=dict)  # per process then (procs.memory_of)


class Stream:
    def __init__(self, track: Track) -> None:
        self.track = track
        self.latency_s = 0.0
        self.sent_at: list[float] = []
        self.onsets: list[tuple[float, float]] = []
        self.dropped_s = 0.0
        self.errors: list[str] = []
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()

    def on_event(self, event: dict[str, Any], received_at: float) -> None:
        kind = event["type"]
        if kind == "onset":
            self.onsets.append((event["time"], received_at))
        elif kind == "status":
            self.dropped_s = max(self.dropped_s, event["dropped_s"])
        elif kind == "error":
            self.errors.append(event["code"])
        elif kind == "started" and not self.started.done():
            self.started.set_result(event)
        elif kind == "stopped" and not self.stopped.done():
            self.stopped.set_result(None)

    def on_text(self, text: str, received_at: float) -> None:
        self.on_event(json.loads(text), received_at)

    def score(self, result: ShardResult) -> None:
        track, sent = self.track, self.sent_at
        sent_s = len(sent) * CHUNK_S
        played = [c for c in track.clicks if c + self.latency_s + 2 * CHUNK_S < sent_s]
        result.clicks += len(played)
        matched = set()
        for onset_s, received in self.onsets:
            near = [c for c in track.clicks if abs(c - onset_s) <= MATCH_S]
            if not near:
                result.extra += 1
                continue
            if near[0] not in played:
                continue
            matched.add(near[0])
            chunks = [k for t, k in track.completing if abs(t - onset_s) <= 0.001]
            onset_chunk = round(near[0] * SAMPLE_RATE) // CHUNK_FRAMES
            if chunks and chunks[0] < len(sent):
                result.overhead_ms.append((received - sent[chunks[0]]) * 1000.0)
                result.from_onset_ms.append((received - sent[onset_chunk]) * 1000.0)
            else:
                result.untimed += 1
        result.missed += len(played) - len(matched)
        result.dropped_s += self.dropped_s
        result.errors += self.errors


async def _pace(streams: list[Stream], send: Any, duration_s: float) -> None:
    """Send chunk ``k`` of stream ``i`` (``send(i, k)``) on an absolute schedule, phases over one chunk."""
    n, n_chunks = len(streams), round(duration_s / CHUNK_S)
    t0 = time.perf_counter() + 0.2
    due = sorted((t0 + i / n * CHUNK_S, i, 0) for i in range(n))
    while due:
        delay = due[0][0] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(max(delay, 0.001))
        while due and due[0][0] <= time.perf_counter():
            _, i, k = heapq.heappop(due)
            streams[i].sent_at.append(time.perf_counter())
            await send(i, k)
            if k + 1 < n_chunks:
                heapq.heappush(due, (t0 + (i + (k + 1) * n) / n * CHUNK_S, i, k + 1))


START = {"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1, "encoding": "pcm_f32le"}


def start_message(settings: dict[str, Any]) -> dict[str, Any]:
    """The lean client's ``start`` with our streams' ``settings`` (e.g. ``beats`` false: no rhythm)."""
    return {**START, "settings": settings} if settings else START


async def _paced(result: ShardResult, server_pid: int, pacing: Any, duration_s: float) -> None:
    """Run ``pacing``, noting the server tree's CPU time over it and its RSS halfway (from /proc)."""
    tree = descendants(server_pid)

    async def note_rss() -> None:
        await asyncio.sleep(0.2 + duration_s / 2)
        tree = descendants(server_pid)
        result.memory = memory_of(tree)  # one reading: the totals below come from it
        result.rss, result.loop_rss, result.anon = memory_totals(result.memory, server_pid)

    cpu0, t0 = cpu_s(tree), time.perf_counter()
    noting = asyncio.create_task(note_rss())
    await pacing
    await noting
    result.server_cpu_s, result.paced_s = cpu_s(descendants(server_pid)) - cpu0, time.perf_counter() - t0


async def run_lean(url: str, server_pid: int, kind: str, n: int, duration_s: float,
                   settings: dict[str, Any] | None = None) -> ShardResult:
    settings = settings if kind == "ours" else None
    made = tracks(kind, duration_s + 1.0, settings)
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    streams, sockets = [], []
    for i in range(n):
        stream = Stream(made[i % CLICK_PHASES])
        socket = await WireSocket.connect(host, port, "/api/v3/stream", stream.on_text)
        socket.send_text(json.dumps(start_message(settings or {})))
        stream.latency_s = float((await asyncio.wait_for(stream.started, 60))["latency_ms"]) / 1000.0
        streams.append(stream)
        sockets.append(socket)

    async def send(i: int, k: int) -> None:
        sockets[i].send(streams[i].track.frames[k])

    result = ShardResult()
    cpu0 = time.process_time()
    await _paced(result, server_pid, _pace(streams, send, duration_s), duration_s)
    for socket in sockets:
        socket.send_text('{"type":"stop"}')
    await asyncio.wait_for(asyncio.gather(*(s.stopped for s in streams)), 120)
    result.cpu_s = time.process_time() - cpu0
    for stream, socket in zip(streams, sockets, strict=True):
        stream.score(result)
        socket.close()
    return result


async def run_user_client(url: str, server_pid: int, n: int, duration_s: float,
                          settings: dict[str, Any] | None = None) -> ShardResult:
    """The same load through :class:`server.client.TransientClient` (aiohttp), as a user's program."""
    from server.client import TransientClient

    made = tracks("ours", duration_s + 1.0, settings)
    result = ShardResult()
    async with TransientClient(url, token="") as client:
        streams, publishers = [], []
        for i in range(n):
            stream = Stream(made[i % CLICK_PHASES])
            publisher = await client.publish(sample_rate=SAMPLE_RATE,
                                             settings=settings or None)
            stream.latency_s = float(publisher.started["latency_ms"]) / 1000.0
            streams.append(stream)
            publishers.append(publisher)

        async def read(stream: Stream, publisher: Any) -> None:
            async for event in publisher.events():
                stream.on_event(event, time.perf_counter())

        readers = [asyncio.create_task(read(s, p)) for s, p in zip(streams, publishers, strict=True)]
        chunks = [[s.track.samples[i:i + CHUNK_FRAMES].tobytes()
                   for i in range(0, len(s.track.samples), CHUNK_FRAMES)] for s in streams]

        async def send(i: int, k: int) -> None:
            await publishers[i].send_audio(chunks[i][k])

        cpu0 = time.process_time()
        await _paced(result, server_pid, _pace(streams, send, duration_s), duration_s)
        await asyncio.gather(*(p.stop(120) for p in publishers))
        await asyncio.gather(*readers)
        result.cpu_s = time.process_time() - cpu0
        for stream in streams:
            stream.score(result)
    return result


def shard_main(args: tuple[str, int, str, int, float, int | None, dict[str, Any]]) -> dict[str, object]:
    url, server_pid, kind, n, duration_s, core, settings = args
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        if kind == "user":
            return asdict(uvloop.run(run_user_client(url, server_pid, n, duration_s, settings)))
        return asdict(uvloop.run(run_lean(url, server_pid, kind, n, duration_s, settings)))
    except Exception as exc:  # reported as the step's error (some exceptions do not cross back pickled)
        return asdict(ShardResult(errors=[f"{type(exc).__name__}: {exc}"]))


# --- Orchestration ---------------------------------------------------------------------------------------


def stream_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Our streams' settings from the command line (only those that differ from the defaults)."""
    settings: dict[str, Any] = {} if args.beats == "on" else {"beats": False}
    if args.lookahead_ms is not None:
        settings["lookahead_ms"] = args.lookahead_ms
    return settings


def start(command: list[str], core: int | None) -> tuple[subprocess.Popen[str], str]:
    pinned = ["taskset", "-c", str(core)] if core is not None else []
    return launch([*pinned, sys.executable, *command], what=command[0])


def run_step(kind: str, url: str, pid: int, n: int, args: argparse.Namespace, pool: Any,
             idle_rss: tuple[int, int, int], core: int | None) -> dict[str, Any]:
    """One step; ``idle_rss``: the server tree's and its main process's RSS before any stream, and the
    tree's anonymous memory."""
    busy0, steal0 = machine_cpu_s()
    wall0 = time.perf_counter()
    client = "user" if kind == "ours-user" else kind
    job = (url, pid, client, n, args.duration_s, core, stream_settings(args))
    pending = pool.apply_async(shard_main, (job,))
    shard = ShardResult(**pending.get(timeout=args.duration_s * 10 + 300))
    wall_s = time.perf_counter() - wall0
    busy_s, steal_s = machine_cpu_s()
    paced_s = shard.paced_s or float("nan")  # nan: the generator failed before pacing
    chunks = n * paced_s / CHUNK_S
    server_cpu_s = shard.server_cpu_s  # over the paced chunks only

    step: dict[str, Any] = {
        "server": kind, "streams": n,
        "p50_ms": round(percentile(shard.overhead_ms, 50), 1),
        "p99_ms": round(percentile(shard.overhead_ms, 99), 1),
        "onset_p50_ms": round(percentile(shard.from_onset_ms, 50), 1),
        "onset_p99_ms": round(percentile(shard.from_onset_ms, 99), 1),
        "clicks": shard.clicks, "missed": shard.missed, "extra": shard.extra, "untimed": shard.untimed,
        "dropped_s": round(shard.dropped_s, 3), "errors": sorted(set(shard.errors)),
        "cpu_pct_per_stream": round(100 * server_cpu_s / paced_s / n, 3),
        "cpu_us_per_chunk": round(1e6 * server_cpu_s / chunks, 1),
        "server_cpu_pct": round(100 * server_cpu_s / paced_s, 1),
        "client_cpu_pct": round(100 * shard.cpu_s / args.duration_s, 1),
        "machine_busy_pct": round(100 * (busy_s - busy0) / wall_s, 1),
        "steal_pct": round(100 * (steal_s - steal0) / wall_s, 1),
        "kb_per_stream": round((shard.rss - idle_rss[0]) / n / 1024, 1),
        "rss_kb": round((shard.rss - idle_rss[0]) / 1024),
        "loop_rss_kb": round((shard.loop_rss - idle_rss[1]) / 1024),
        "loop_kb_per_stream": round((shard.loop_rss - idle_rss[1]) / n / 1024, 1),  # the event loop's part
        # Without the pages of shared library code the first streams fault in and the arena counted twice:
        "anon_kb_per_stream": round((shard.anon - idle_rss[2]) / n / 1024, 1),
    }
    step["held"] = (step["p99_ms"] <= args.p99_limit_ms and step["dropped_s"] == 0 and step["missed"] == 0
                    and not step["errors"])
    if kind == "sink":  # it finds nothing: it held if it kept up, i.e. its core was not saturated
        step["held"] = step["server_cpu_pct"] < SINK_SATURATED_PCT and not step["errors"]
    return step


SINK_SATURATED_PCT = 90.0  # the sink's core this busy: it no longer keeps up

HEADER = ("server", "streams", "held", "p50_ms", "p99_ms", "onset_p50_ms", "onset_p99_ms", "missed",
          "dropped_s", "cpu_pct_per_stream", "cpu_us_per_chunk", "kb_per_stream", "loop_kb_per_stream",
          "anon_kb_per_stream", "client_cpu_pct", "machine_busy_pct")


def idle_memory(pid: int) -> tuple[int, int, int]:
    """The server tree's RSS, its main process's, and the tree's anonymous memory (bytes), before a step."""
    return memory_totals(memory_of(descendants(pid)), pid)


def marginal_kb(results: list[dict[str, Any]], kind: str) -> str:
    """RSS added per stream from one step to the next (the server's fixed warm-up cancels out), in KB."""
    steps = sorted((r["streams"], r["rss_kb"], r["loop_rss_kb"]) for r in results if r["server"] == kind)
    parts = [f"{n0}->{n1}: {(t1 - t0) / (n1 - n0):.1f} ({(l1 - l0) / (n1 - n0):.1f} event loop)"
             for (n0, t0, l0), (n1, t1, l1) in itertools.pairwise(steps) if n1 > n0]
    return "KB per added stream " + (", ".join(parts) if parts else "(one step only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="64,128,192,256,320")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--servers", default="ours,naive")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--user-steps", default="", help="then ours on every core, aiohttp client")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--keep-going", action="store_true")
    parser.add_argument("--lookahead-ms", type=float, default=None,
                        help="our streams' setting lookahead_ms (default: the server's default)")
    parser.add_argument("--beats", choices=("on", "off"), default="on",
                        help="our streams' setting beats (the rhythm beside the detector); on is the default")
    parser.add_argument("--server-arg", action="append", default=[], help="extra run.py option")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    ours_cmd = [str(REPO / "run.py"), "--port", "0", "--max-streams", "4096", "--max-streams-per-client",
                "4096", "--idle-timeout-s", "120", "--log-level", "WARNING", *args.server_arg]
    naive_cmd = [str(REPO / "bench" / "naive_aubio_server.py")]
    commands = {"ours": ours_cmd, "naive": naive_cmd, "sink": [*naive_cmd, "--method", "none", "--uvloop"]}
    kinds = args.servers.split(",")
    results: list[dict[str, Any]] = []
    servers: dict[str, tuple[subprocess.Popen[str], str, tuple[int, int, int]]] = {}
    print(f"load average {os.getloadavg()}", flush=True)
    try:
        for kind in kinds:
            proc, url = start(commands[kind], args.server_core)
            time.sleep(1.0)
            servers[kind] = (proc, url, idle_memory(proc.pid))
            print(f"{kind}: {url} pid {proc.pid} on core {args.server_core}, "
                  f"{len(descendants(proc.pid))} processes, idle RSS {servers[kind][2][0] / 2**20:.1f} MiB",
                  flush=True)
        print(" ".join(f"{h:>10}" for h in HEADER), flush=True)
        failed: set[str] = set()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            for n in (int(s) for s in args.steps.split(",") if s):
                for kind in kinds:
                    if kind in failed:
                        continue
                    proc, url, idle = servers[kind]
                    step = run_step(kind, url, proc.pid, n, args, pool, idle, args.client_core)
                    results.append(step)
                    print(" ".join(f"{step[h]!s:>10}" for h in HEADER), flush=True)
                    if not step["held"] and not args.keep_going:
                        failed.add(kind)
                    time.sleep(1.0)
                if len(failed) == len(kinds):
                    break
            for proc, _, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            servers.clear()
            if args.user_steps:
                proc, url = start(ours_cmd, None)
                time.sleep(1.0)
                servers["ours-user"] = (proc, url, idle_memory(proc.pid))
                print(f"ours on every core, server.client: {url}", flush=True)
                for n in (int(s) for s in args.user_steps.split(",") if s):
                    step = run_step("ours-user", url, proc.pid, n, args, pool, servers["ours-user"][2], None)
                    results.append(step)
                    print(" ".join(f"{step[h]!s:>10}" for h in HEADER), flush=True)
                    if not step["held"] and not args.keep_going:
                        break
                    time.sleep(1.0)
    finally:
        for proc, _, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"load average {os.getloadavg()}", flush=True)
    for kind in [*kinds, "ours-user"]:
        held = [r["streams"] for r in results if r["server"] == kind and r["held"]]
        if any(r["server"] == kind for r in results):
            print(f"{kind}: held {max(held) if held else 0} streams", flush=True)
            print(f"{kind}: {marginal_kb(results, kind)}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "load_avg": os.getloadavg(), "steps": results}, indent=2,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
