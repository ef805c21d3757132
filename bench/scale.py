"""Scale-out on Redis: event fan-out latency across instances, and file throughput with 1, 2 and 4 workers.

Usage::

    .venv/bin/python bench/scale.py [--streams 8] [--duration-s 20] [--click-every-s 0.25]
                                    [--files 16] [--file-minutes 2] [--worker-steps 1,2,4] [--repeat 2]
                                    [--json bench/results/scale.json]

Starts its own ``redis-server`` (free loopback port, append-only file in a temporary directory) and
``run.py`` processes on it; stops them all by pid at the end.

- Fan-out: instances A and B (``--no-worker``). One process publishes ``--streams`` live streams to A
  (48 kHz mono float32, 20 ms chunks paced in real time, a click every ``--click-every-s``); one process
  subscribes to every stream on A, another on B. Each notes, per onset event, when it arrived
  (``time.perf_counter``: CLOCK_MONOTONIC, one clock for every process on the machine). Fan-out latency of
  an onset = a subscriber's receive time minus the publisher's receive time of the same onset (the
  publisher gets it on its own socket at the moment the instance publishes it). Subscribers on A get events
  straight from the publishing session; subscribers on B get them through Redis pub/sub.
- Throughput: instance A only, and N ``run.py worker --workers 1`` processes (one analysis process each)
  for N in ``--worker-steps``. ``--files`` generated 44.1 kHz 16-bit mono WAVs of ``--file-minutes`` are
  POSTed to A at once; time from the first upload to the last ``success`` (polled on A). Each step runs
  ``--repeat`` batches with the same workers and keeps the fastest (the least disturbed by other load on a
  shared machine); files per second, multiple of real time (audio seconds / wall seconds), and the
  speed-up over the first step; the workers' CPU time (with their pool processes) as audio seconds per CPU
  second, and how many cores' worth of CPU everything else on the machine used meanwhile (``others``: a
  shared machine's other work caps what more workers can gain; read it before comparing steps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf
import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procs import descendants, stop  # noqa: E402

SAMPLE_RATE = 48000
CHUNK_S = 0.02
CHUNK_FRAMES = round(SAMPLE_RATE * CHUNK_S)
CLICK_LEN = 16  # samples
FILE_RATE = 44100
START_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Onsets = dict[str, float]  # "stream_id/time" -> receive time (perf_counter seconds)


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "yes", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def start_run_py(args: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    """``run.py ARGS`` in its own process group; returns it and what follows ``marker`` on its ready line."""
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(marker):
            proc.stdout.close()  # nothing else is printed on stdout (logs go to stderr)
            return proc, line[len(marker):].strip()
    raise RuntimeError(f"run.py {' '.join(args)} did not start")


# --- fan-out ---------------------------------------------------------------------------------------------


def click_track(duration_s: float, click_every_s: float, phase_s: float) -> np.ndarray:
    samples = np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)
    at_s = 0.2 + phase_s
    while at_s < duration_s - 0.2:
        start = round(at_s * SAMPLE_RATE)
        samples[start : start + CLICK_LEN] = 0.8
        at_s += click_every_s
    return samples


def onset_key(event: dict[str, Any]) -> str:
    return f"{event['stream_id']}/{event['time']:.6f}"


async def record_onsets(ws: aiohttp.ClientWebSocketResponse, arrived: Onsets) -> None:
    """Note when each onset event arrives on ``ws``, until it closes or (a subscriber's) ``ended``."""
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            event = json.loads(message.data)
            if event["type"] == "onset":
                arrived[onset_key(event)] = time.perf_counter()
            elif event["type"] == "ended":
                return


async def _publish(url: str, streams: int, duration_s: float, click_every_s: float, ids: Any, go: Any,
                   out: Any) -> None:
    arrived: Onsets = {}
    async with aiohttp.ClientSession() as http:
        sockets = []
        for _ in range(streams):
            ws = await http.ws_connect(url + "/api/v3/stream", max_msg_size=0)
            await ws.send_json({"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1,
                                "encoding": "pcm_f32le"})
            started = await ws.receive_json()
            sockets.append((ws, started["stream_id"]))
        ids.put([stream_id for _, stream_id in sockets])
        await asyncio.get_running_loop().run_in_executor(None, go.wait)

        async def send(ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
            track = click_track(duration_s, click_every_s, phase_s=index * click_every_s / streams)
            start_s = time.perf_counter() + index * CHUNK_S / streams
            for n, at in enumerate(range(0, len(track), CHUNK_FRAMES)):
                delay_s = start_s + n * CHUNK_S - time.perf_counter()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                await ws.send_bytes(track[at : at + CHUNK_FRAMES].tobytes())
            await ws.send_json({"type": "stop"})

        receivers = [asyncio.create_task(record_onsets(ws, arrived)) for ws, _ in sockets]
        await asyncio.gather(*(send(ws, i) for i, (ws, _) in enumerate(sockets)))
        await asyncio.gather(*receivers)
    out.put(arrived)


async def _subscribe(url: str, stream_ids: list[str], ready: Any, out: Any) -> None:
    arrived: Onsets = {}
    async with aiohttp.ClientSession() as http:
        sockets = []
        for stream_id in stream_ids:
            ws = await http.ws_connect(f"{url}/api/v3/streams/{stream_id}/events", max_msg_size=0)
            first = await ws.receive_json()
            assert first["type"] == "subscribed", first
            sockets.append(ws)
        ready.set()
        await asyncio.gather(*(record_onsets(ws, arrived) for ws in sockets))
    out.put(arrived)


def publisher_main(*args: Any) -> None:
    uvloop.run(_publish(*args))


def subscriber_main(*args: Any) -> None:
    uvloop.run(_subscribe(*args))


def percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"count": 0}
    array = np.asarray(values_ms)
    return {"count": len(values_ms), "p50_ms": round(float(np.percentile(array, 50)), 3),
            "p99_ms": round(float(np.percentile(array, 99)), 3), "max_ms": round(float(array.max()), 3)}


def fan_out(url_a: str, url_b: str, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ids, outs = context.Queue(), [context.Queue() for _ in range(3)]
    go, ready_a, ready_b = context.Event(), context.Event(), context.Event()
    publisher = context.Process(target=publisher_main, args=(url_a, args.streams, args.duration_s,
                                                             args.click_every_s, ids, go, outs[0]))
    publisher.start()
    stream_ids = ids.get(timeout=START_TIMEOUT_S)
    on_a = context.Process(target=subscriber_main, args=(url_a, stream_ids, ready_a, outs[1]))
    on_b = context.Process(target=subscriber_main, args=(url_b, stream_ids, ready_b, outs[2]))
    on_a.start()
    on_b.start()
    if not (ready_a.wait(START_TIMEOUT_S) and ready_b.wait(START_TIMEOUT_S)):
        raise RuntimeError("the subscribers did not connect")
    go.set()
    wait_s = args.duration_s + START_TIMEOUT_S
    published, seen_a, seen_b = (queue.get(timeout=wait_s) for queue in outs)
    for proc in (publisher, on_a, on_b):
        proc.join(timeout=30)
    result: dict[str, Any] = {"streams": args.streams, "duration_s": args.duration_s,
                              "onsets_published": len(published)}
    for name, seen in (("subscriber_on_A", seen_a), ("subscriber_on_B", seen_b)):
        latencies = [(seen[key] - at) * 1000.0 for key, at in published.items() if key in seen]
        result[name] = {**percentiles(latencies), "missing": len(published) - len(latencies)}
    return result


# --- CPU accounting from /proc ---------------------------------------------------------------------------


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still running)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy so far (all processes, all users)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


# --- throughput ------------------------------------------------------------------------------------------


def write_files(folder: Path, count: int, minutes: float) -> list[Path]:
    rng = np.random.default_rng(7)
    frames = round(minutes * 60 * FILE_RATE)
    paths = []
    for index in range(count):
        audio = (rng.standard_normal(frames) * 0.003).astype(np.float32)  # -50 dB noise floor
        at = 0
        while at < frames - FILE_RATE:
            at += int(rng.integers(FILE_RATE // 6, FILE_RATE // 2))
            burst = rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300.0)
            audio[at : at + 2000] += (0.5 * burst).astype(np.float32)
        path = folder / f"file{index:02d}.wav"
        sf.write(str(path), np.clip(audio, -1, 1), FILE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


async def _run_batch(url: str, paths: list[Path]) -> float:
    async with aiohttp.ClientSession() as http:
        started_s = time.perf_counter()

        async def post(path: Path) -> str:
            form = aiohttp.FormData()
            form.add_field("file", path.read_bytes(), filename=path.name, content_type="audio/wav")
            async with http.post(url + "/api/v3/analysis", data=form) as resp:
                body = await resp.json()
                if resp.status != 202:
                    raise RuntimeError(f"upload refused: {resp.status} {body}")
                return str(body["task_id"])

        task_ids = await asyncio.gather(*(post(path) for path in paths))
        waiting = set(task_ids)
        while waiting:
            for task_id in list(waiting):
                async with http.get(f"{url}/api/v3/analysis/{task_id}") as resp:
                    status = (await resp.json())["status"]
                if status == "failed":
                    raise RuntimeError(f"task {task_id} failed")
                if status == "success":
                    waiting.discard(task_id)
            await asyncio.sleep(0.02)
        return time.perf_counter() - started_s


def measured_batch(url_a: str, paths: list[Path], workers: list[int], instance: int,
                   cpus: int) -> dict[str, float]:
    """One batch: its wall time, the workers' CPU (with their pools), and how busy the rest of the machine
    was meanwhile (``others_cores``: cores' worth of CPU used by everything but the workers, the instance
    and this script)."""
    worker_tree, instance_tree = descendants(*workers), descendants(instance)
    own = [os.getpid()]
    before = (cpu_s(worker_tree), cpu_s(instance_tree), cpu_s(own), machine_busy_s())
    wall_s = uvloop.run(_run_batch(url_a, paths))
    after = (cpu_s(worker_tree), cpu_s(instance_tree), cpu_s(own), machine_busy_s())
    workers_s, instance_s, own_s, busy_s = (b - a for a, b in zip(before, after, strict=True))
    others_s = max(0.0, busy_s - workers_s - instance_s - own_s)
    return {"wall_s": wall_s, "workers_cpu_s": workers_s, "instance_cpu_s": instance_s,
            "others_cores": min(float(cpus), others_s / wall_s)}


def throughput(url_a: str, instance: int, redis_url: str, data_dir: Path, paths: list[Path],
               minutes: float, steps: list[int], repeat: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    audio_s = len(paths) * minutes * 60
    cpus = os.cpu_count() or 1
    for count in steps:
        worker_args = ["worker", "--redis", redis_url, "--data-dir", str(data_dir), "--workers", "1",
                       "--log-level", "WARNING"]
        workers = [start_run_py(worker_args, "worker ready: ")[0] for _ in range(count)]
        try:
            runs = [measured_batch(url_a, paths, [p.pid for p in workers], instance, cpus)
                    for _ in range(max(1, repeat))]
        finally:
            for proc in workers:
                stop(proc)
        best = min(runs, key=lambda run: run["wall_s"])
        wall_s = best["wall_s"]
        row = {"workers": count, "files": len(paths), "walls_s": [round(r["wall_s"], 3) for r in runs],
               "wall_s": round(wall_s, 3), "files_per_s": round(len(paths) / wall_s, 3),
               "x_real_time": round(audio_s / wall_s, 1),
               "x_real_time_per_worker_cpu_s": round(audio_s / max(best["workers_cpu_s"], 1e-9), 1),
               "instance_cpu_s": round(best["instance_cpu_s"], 2),
               "others_cores": round(best["others_cores"], 2)}
        results.append(row)
        print(f"  {count} worker(s): {row['wall_s']:.2f} s (runs {row['walls_s']}), "
              f"{row['files_per_s']:.2f} files/s, {row['x_real_time']:.0f}x real time; workers' CPU "
              f"{row['x_real_time_per_worker_cpu_s']:.0f}x real time per CPU second; other load "
              f"{row['others_cores']:.2f} of {cpus} cores", flush=True)
    base = results[0]["wall_s"]
    for row in results:
        row["speedup_vs_first"] = round(base / row["wall_s"], 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--click-every-s", type=float, default=0.25)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--file-minutes", type=float, default=2.0)
    parser.add_argument("--worker-steps", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    steps = [int(step) for step in args.worker_steps.split(",")]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "redis").mkdir()
        redis_proc, redis_url = start_redis(tmp_dir / "redis")
        data_dir = tmp_dir / "data"
        common = ["--port", "0", "--redis", redis_url, "--data-dir", str(data_dir), "--no-worker",
                  "--workers", "1", "--log-level", "WARNING", "--max-streams-per-client", "4096",
                  "--rate-limit-per-s", "0"]
        instances: list[subprocess.Popen[str]] = []
        try:
            proc_a, url_a = start_run_py(common, "serving on ")
            instances.append(proc_a)
            proc_b, url_b = start_run_py(common, "serving on ")
            instances.append(proc_b)
            print(f"fan-out: {args.streams} streams on A for {args.duration_s:g} s, subscribers on A and B",
                  flush=True)
            report["fan_out"] = fan_out(url_a, url_b, args)
            for name in ("subscriber_on_A", "subscriber_on_B"):
                print(f"  {name}: {report['fan_out'][name]}", flush=True)
            stop(proc_b)
            paths = write_files(tmp_dir, args.files, args.file_minutes)
            print(f"throughput: {args.files} files x {args.file_minutes:g} min through A", flush=True)
            report["throughput"] = throughput(url_a, proc_a.pid, redis_url, data_dir, paths,
                                              args.file_minutes, steps, args.repeat)
        finally:
            for proc in instances:
                stop(proc)
            stop(redis_proc)
    report["load_avg_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
