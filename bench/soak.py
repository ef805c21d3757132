"""Soak test: a long stretch of streams joining and leaving, subscribers and file jobs, compressed in time.

Starts ``run.py`` in a subprocess and drives it from this process for ``--duration-s`` seconds:

- live streams join at random (Poisson, ``--joins-per-s``), each lasting a random 2-12 s of audio sent at
  ``--speed`` times real time (so one wall-clock minute holds ``speed`` minutes of stream time), then
  ``stop`` or, one time in four, an abrupt disconnect;
- about half of the streams get 1-3 subscribers, each leaving at a random time or at the stream's end;
- a short WAV file is posted for analysis every ``--job-every-s`` seconds and polled to its end.

With ``--attacks``, attacks are mixed into that load, each at its own rate:

- silent sockets: WebSockets to ``/api/v3/stream`` and ``/api/v3/upload`` that never send a message (how
  long the server keeps each is reported);
- oversized streams: 192 kHz x 32-channel float streams sending audio as fast as the socket takes it;
- a full disk: the server runs in a throwaway mount namespace (``unshare -m``, needs root) with its data
  directory on a ``--tmpfs-mib`` tmpfs, which this process fills to the last byte through
  ``/proc/PID/root`` for ``--fill-s`` seconds now and then;
- stalled uploads: HTTP uploads that send their headers and part of the body, then nothing.

Every accepted file job is followed to ``success`` or ``failed`` (with its error code); the report counts
any left unfinished. Onset latency of the ordinary streams (client receipt minus the onset's
``wall_time``) is reported as p50/p99.

Every ``--sample-s`` seconds it samples the server's resident memory (its process and the pool's worker
processes) and its open file descriptors (server process), and reports start, end, peak and the slope
(least squares over the samples after the first quarter, i.e. after warm-up, and over the second half
alone). Flat memory and descriptors show that nothing leaks per stream, subscriber or job; a slope that
falls from the first figure to the second is warm-up still settling, not a leak.

    python bench/soak.py --duration-s 240
    python bench/soak.py --duration-s 120 --attacks
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import descendants, launch, rss_bytes, start_server
from testkit.disk import fill

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16000
CHUNK_S = 0.02


@dataclass
class Tally:
    streams: int = 0
    stopped: int = 0
    disconnected: int = 0
    subscribers: int = 0
    onsets: int = 0
    jobs: int = 0
    jobs_ok: int = 0
    errors: list[str] = field(default_factory=list)
    job_endings: dict[str, int] = field(default_factory=dict)  # "success", "failed:<code>", "unfinished"
    jobs_refused: dict[str, int] = field(default_factory=dict)  # "<status> <code>"
    latencies_s: list[float] = field(default_factory=list)  # onsets of the ordinary streams
    attacks: dict[str, int] = field(default_factory=dict)
    silent_kept_s: list[float] = field(default_factory=list)  # how long a silent socket was kept open
    stalled_answers: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def click_audio(duration_s: float, rng: random.Random) -> np.ndarray:
    samples = (np.random.default_rng(rng.getrandbits(32)).standard_normal(round(duration_s * SAMPLE_RATE))
               * 0.01).astype(np.float32)
    for t in np.arange(0.1, duration_s - 0.05, rng.uniform(0.15, 0.5)):
        samples[round(t * SAMPLE_RATE):][:32] = 0.8
    return samples


def wav_bytes(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


async def subscriber(http: aiohttp.ClientSession, url: str, stream_id: str, leave_s: float,
                     tally: Tally) -> None:
    try:
        async with http.ws_connect(f"{url}/api/v3/streams/{stream_id}/events") as ws:
            tally.subscribers += 1
            deadline = time.monotonic() + leave_s
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
                if message.type != aiohttp.WSMsgType.TEXT or json.loads(message.data)["type"] == "ended":
                    return
    except (TimeoutError, aiohttp.ClientError):
        pass


async def stream(http: aiohttp.ClientSession, url: str, rng: random.Random, speed: float,
                 tally: Tally) -> None:
    audio = click_audio(rng.uniform(2.0, 12.0), rng)
    abrupt = rng.random() < 0.25
    watchers: list[asyncio.Task[None]] = []
    try:
        async with http.ws_connect(url + "/api/v3/stream") as ws:
            await ws.send_str(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1,
                                          "encoding": "pcm_f32le"}))
            started = json.loads((await ws.receive(timeout=30)).data)
            if started.get("type") != "started":
                tally.errors.append(f"start refused: {started}")
                return
            tally.streams += 1
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 3)):
                    watchers.append(asyncio.create_task(subscriber(
                        http, url, started["stream_id"], rng.uniform(0.5, 15.0), tally)))
            reader = asyncio.create_task(_count_onsets(ws, tally, measure=True))
            step = round(CHUNK_S * SAMPLE_RATE)
            for i in range(0, len(audio), step):
                await ws.send_bytes(audio[i:i + step].tobytes())
                await asyncio.sleep(CHUNK_S / speed)
            if abrupt:
                tally.disconnected += 1
                reader.cancel()
                return  # leaving the context closes the socket without `stop`
            await ws.send_str(json.dumps({"type": "stop"}))
            await asyncio.wait_for(reader, 60)
            tally.stopped += 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.errors.append(f"stream: {type(exc).__name__}: {exc}")
    finally:
        await asyncio.gather(*watchers, return_exceptions=True)


async def _count_onsets(ws: aiohttp.ClientWebSocketResponse, tally: Tally, measure: bool = False) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            event = json.loads(message.data)
            if event["type"] == "onset":
                tally.onsets += 1
                if measure:
                    tally.latencies_s.append(time.time() - event["wall_time"])


async def job(http: aiohttp.ClientSession, url: str, data: bytes, tally: Tally) -> None:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="soak.wav", content_type="audio/wav")
    try:
        async with http.post(url + "/api/v3/analysis", data=form) as resp:
            body = await resp.json()
            if resp.status != 202:
                tally.count(tally.jobs_refused, f"{resp.status} {body['error']['code']}")
                return
        tally.jobs += 1
        for _ in range(600):
            await asyncio.sleep(0.5)
            async with http.get(f"{url}/api/v3/analysis/{body['task_id']}") as resp:
                if resp.status != 200:
                    continue  # e.g. 503 while the job store waits for room
                task = await resp.json()
            if task["status"] in ("success", "failed"):
                tally.jobs_ok += task["status"] == "success"
                ending = "success" if task["status"] == "success" else f"failed:{task['error']['code']}"
                tally.count(tally.job_endings, ending)
                return
        tally.count(tally.job_endings, "unfinished")
        tally.errors.append(f"job {body['task_id']} did not finish")
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.errors.append(f"job: {type(exc).__name__}: {exc}")


# --- attacks ----------------------------------------------------------------------------------------


async def silent_socket(http: aiohttp.ClientSession, url: str, path: str, tally: Tally) -> None:
    """A WebSocket that never sends a message; how long the server keeps it."""
    tally.count(tally.attacks, f"silent {path}")
    started = time.monotonic()
    try:
        async with http.ws_connect(url + path, heartbeat=None, autoping=True) as ws:
            async for _ in ws:
                pass
        tally.silent_kept_s.append(time.monotonic() - started)
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.errors.append(f"silent socket: {type(exc).__name__}: {exc}")


async def oversized_stream(http: aiohttp.ClientSession, url: str, seconds: float, tally: Tally) -> None:
    """A 192 kHz x 32-channel float stream sending ``seconds`` of audio as fast as it can."""
    rate, channels = 192000, 32
    tally.count(tally.attacks, "oversized stream")
    chunk = np.zeros((8000, channels), dtype="<f4")  # 1,024,000 bytes: under max_message_bytes
    chunk[::512] = 0.9
    data = chunk.tobytes()
    try:
        async with http.ws_connect(url + "/api/v3/stream") as ws:
            await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, "channels": channels,
                                          "encoding": "pcm_f32le"}))
            first = json.loads((await ws.receive(timeout=30)).data)
            if first["type"] != "started":
                tally.count(tally.attacks, f"oversized refused {first.get('code')}")
                return
            for _ in range(int(seconds * rate / len(chunk))):
                await ws.send_bytes(data)
            await ws.send_str(json.dumps({"type": "stop"}))
            await asyncio.wait_for(_count_onsets(ws, tally), 120)
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.errors.append(f"oversized stream: {type(exc).__name__}: {exc}")


async def stalled_upload(host: str, port: int, tally: Tally) -> None:
    """An HTTP upload that sends its headers and part of its body, then nothing; the server's answer."""
    tally.count(tally.attacks, "stalled upload")
    body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\n" + b"\0" * 4096
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /api/v3/analysis HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
                     "Content-Type: multipart/form-data; boundary=B\r\n\r\n".encode() + body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
        tally.count(tally.stalled_answers, head.split(b"\r\n", 1)[0].decode())
        writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        tally.count(tally.stalled_answers, type(exc).__name__)


async def full_disk(data_dir: Path, fill_s: float, tally: Tally) -> None:
    """Fill the server's data directory for ``fill_s`` seconds, then free it."""
    tally.count(tally.attacks, "full disk")
    filler = await asyncio.to_thread(fill, data_dir, "soak-filler")
    await asyncio.sleep(fill_s)
    filler.unlink()


def percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"n": 0}
    return {"n": len(values), "p50": round(float(np.percentile(values, 50)), 1),
            "p99": round(float(np.percentile(values, 99)), 1), "max": round(float(values.max()), 1)}


def slope_per_min(samples: list[tuple[float, float]], skip: float = 0.25) -> float:
    """Least-squares slope of (t_s, value) per minute over the samples after the first ``skip`` of them."""
    kept = samples[int(len(samples) * skip):]
    if len(kept) < 2:
        return 0.0
    t = np.array([s[0] for s in kept])
    v = np.array([s[1] for s in kept])
    return float(np.polyfit(t, v, 1)[0] * 60.0)


async def drive(args: argparse.Namespace, url: str, server_pid: int) -> dict[str, object]:
    rng = random.Random(args.seed)
    tally = Tally()
    job_data = wav_bytes(click_audio(10.0, rng))
    memory: list[tuple[float, float]] = []
    server_memory: list[tuple[float, float]] = []  # the server process alone, without the pool
    fds: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.monotonic()
        next_sample = next_job = t0
        next_join = t0
        attacks = {"silent": t0 + 1, "oversized": t0 + 3, "stalled": t0 + 2, "disk": t0 + 10}
        host, port = url.removeprefix("http://").split(":")
        while (now := time.monotonic()) - t0 < args.duration_s:
            if args.attacks:
                if now >= attacks["silent"]:
                    for path in ("/api/v3/stream", "/api/v3/upload"):
                        tasks.add(asyncio.create_task(silent_socket(http, url, path, tally)))
                    attacks["silent"] += args.silent_every_s
                if now >= attacks["oversized"]:
                    tasks.add(asyncio.create_task(oversized_stream(http, url, 2.0, tally)))
                    attacks["oversized"] += args.oversized_every_s
                if now >= attacks["stalled"]:
                    tasks.add(asyncio.create_task(stalled_upload(host, int(port), tally)))
                    attacks["stalled"] += args.stalled_every_s
                if now >= attacks["disk"] and args.disk_root is not None:
                    tasks.add(asyncio.create_task(full_disk(args.disk_root, args.fill_s, tally)))
                    attacks["disk"] += args.disk_every_s
            if now >= next_sample:
                memory.append((now - t0, rss_bytes(descendants(server_pid)) / 2**20))
                server_memory.append((now - t0, rss_bytes([server_pid]) / 2**20))
                fds.append((now - t0, open_fds(server_pid)))
                next_sample += args.sample_s
            if now >= next_job:
                tasks.add(asyncio.create_task(job(http, url, job_data, tally)))
                next_job += args.job_every_s
            if now >= next_join:
                tasks.add(asyncio.create_task(stream(http, url, rng, args.speed, tally)))
                next_join += rng.expovariate(args.joins_per_s)
            tasks = {task for task in tasks if not task.done()}
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(2.0)  # let the server finish ending what just left
        now = time.monotonic()
        memory.append((now - t0, rss_bytes(descendants(server_pid)) / 2**20))
        server_memory.append((now - t0, rss_bytes([server_pid]) / 2**20))
        fds.append((now - t0, open_fds(server_pid)))
        async with http.get(url + "/metrics") as resp:
            metrics = await resp.text()
    audio_s = next((float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("transient_audio_received_seconds_total ")), 0.0)
    latencies = np.array(tally.latencies_s) * 1000.0
    return {
        "attacks": tally.attacks, "job_endings": tally.job_endings, "jobs_refused": tally.jobs_refused,
        "stalled_upload_answers": tally.stalled_answers,
        "silent_sockets_kept_s": ({"n": len(tally.silent_kept_s), "max": round(max(tally.silent_kept_s), 1)}
                                  if tally.silent_kept_s else {"n": 0}),
        "good_stream_onset_latency_ms": percentiles(latencies),
        "duration_s": args.duration_s, "speed": args.speed, "stream_time_s": round(audio_s, 1),
        "streams": tally.streams, "stopped": tally.stopped, "disconnected": tally.disconnected,
        "subscribers": tally.subscribers, "onsets": tally.onsets, "jobs": tally.jobs,
        "jobs_ok": tally.jobs_ok,
        "errors": tally.errors[:10], "error_count": len(tally.errors),
        "rss_mib": {"start": round(memory[0][1], 1), "end": round(memory[-1][1], 1),
                    "peak": round(max(v for _, v in memory), 1),
                    "slope_per_min": round(slope_per_min(memory), 2),
                    # Warm-up (allocator pools, caches, buffers reaching their working size) slows down
                    # over minutes; growth that does not is a leak. So also the second half on its own.
                    "slope_per_min_second_half": round(slope_per_min(memory, 0.5), 2)},
        "server_only_rss_mib": {"start": round(server_memory[0][1], 1), "end": round(server_memory[-1][1], 1),
                                "slope_per_min": round(slope_per_min(server_memory), 2),
                                "slope_per_min_second_half": round(slope_per_min(server_memory, 0.5), 2)},
        "fds": {"start": int(fds[0][1]), "end": int(fds[-1][1]), "peak": int(max(v for _, v in fds)),
                "slope_per_min": round(slope_per_min(fds), 2)},
        "samples": [(round(t, 1), round(m, 1), int(f)) for (t, m), (_, f) in zip(memory, fds, strict=True)],
    }


def start_in_namespace(run_args: list[str], data_dir: Path, tmpfs_mib: int
                       ) -> tuple[subprocess.Popen[str], str]:
    """``run.py`` in a throwaway mount namespace with ``data_dir`` on a tmpfs of ``tmpfs_mib`` MiB."""
    data_dir.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o size={tmpfs_mib}m tmpfs {data_dir} && exec {sys.executable} "
              f"{REPO / 'run.py'} --port 0 " + " ".join(run_args))
    return launch(["unshare", "-m", "--propagation", "private", "sh", "-c", script])


def drain(proc: subprocess.Popen[str]) -> list[str]:
    """Keep reading the server's output (a full pipe would stall it); the lines, as they come."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=240.0)
    parser.add_argument("--speed", type=float, default=15.0,
                        help="stream audio sent at this multiple of real time")
    parser.add_argument("--joins-per-s", type=float, default=2.5, help="new streams per second (Poisson)")
    parser.add_argument("--job-every-s", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/transient-soak"))
    parser.add_argument("--idle-timeout-s", type=float, default=60.0)
    parser.add_argument("--attacks", action="store_true", help="mix the attacks above into the load")
    parser.add_argument("--silent-every-s", type=float, default=2.0)
    parser.add_argument("--oversized-every-s", type=float, default=10.0)
    parser.add_argument("--stalled-every-s", type=float, default=3.0)
    parser.add_argument("--disk-every-s", type=float, default=30.0)
    parser.add_argument("--fill-s", type=float, default=5.0, help="how long each full-disk attack lasts")
    parser.add_argument("--tmpfs-mib", type=int, default=64, help="size of the data directory's tmpfs")
    parser.add_argument("--server-arg", action="append", default=[], help="one more run.py argument")
    args = parser.parse_args()
    run_args = ["--workers", str(args.workers), "--data-dir", str(args.data_dir), "--log-level", "WARNING",
                "--idle-timeout-s", str(args.idle_timeout_s), *args.server_arg]
    args.disk_root = None
    if args.attacks and os.geteuid() == 0:
        proc, url = start_in_namespace(run_args, args.data_dir, args.tmpfs_mib)
        args.disk_root = Path(f"/proc/{proc.pid}/root") / args.data_dir.resolve().relative_to("/")
    else:
        proc, url = start_server(run_args)
    log_tail = drain(proc)
    try:
        report = asyncio.run(drive(args, url, proc.pid))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    report["server_log_warnings"] = sum(" WARNING " in line for line in log_tail)
    report["server_log_tracebacks"] = sum("Traceback" in line for line in log_tail)
    report["server_exit_code"] = code
    samples = report.pop("samples")
    print(json.dumps(report, indent=1))
    print("samples (t_s, rss_mib, fds):", json.dumps(samples))


if __name__ == "__main__":
    main()
