"""Soak test: a long stretch of streams joining and leaving, subscribers and file jobs, compressed in time.

Starts ``run.py`` in a subprocess and drives it from this process for ``--duration-s`` seconds:

- live streams join at random (Poisson, ``--joins-per-s``), each lasting a random 2-12 s of audio sent at
  ``--speed`` times real time (so one wall-clock minute holds ``speed`` minutes of stream time), then
  ``stop`` or, one time in four, an abrupt disconnect;
- about half of the streams get 1-3 subscribers, each leaving at a random time or at the stream's end;
- a short WAV file is posted for analysis every ``--job-every-s`` seconds and polled to its end.

Every ``--sample-s`` seconds it samples the server's resident memory (its process and the pool's worker
processes) and its open file descriptors (server process), and reports start, end, peak and the slope
(least squares over the samples after the first quarter, i.e. after warm-up, and over the second half
alone). Flat memory and descriptors show that nothing leaks per stream, subscriber or job; a slope that
falls from the first figure to the second is warm-up still settling, not a leak.

    python bench/soak.py --duration-s 240
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import descendants, rss_bytes, start_server

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
            reader = asyncio.create_task(_count_onsets(ws, tally))
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


async def _count_onsets(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] == "onset":
            tally.onsets += 1


async def job(http: aiohttp.ClientSession, url: str, data: bytes, tally: Tally) -> None:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="soak.wav", content_type="audio/wav")
    try:
        async with http.post(url + "/api/v3/analysis", data=form) as resp:
            body = await resp.json()
            if resp.status != 202:
                tally.errors.append(f"job refused: {resp.status} {body}")
                return
        tally.jobs += 1
        for _ in range(600):
            await asyncio.sleep(0.5)
            async with http.get(f"{url}/api/v3/analysis/{body['task_id']}") as resp:
                status = (await resp.json())["status"]
            if status in ("success", "failed"):
                tally.jobs_ok += status == "success"
                return
        tally.errors.append(f"job {body['task_id']} did not finish")
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.errors.append(f"job: {type(exc).__name__}: {exc}")


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
        while (now := time.monotonic()) - t0 < args.duration_s:
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
    return {
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
    args = parser.parse_args()
    proc, url = start_server(["--workers", str(args.workers), "--data-dir", str(args.data_dir),
                              "--log-level", "WARNING", "--idle-timeout-s", "60"])
    try:
        report = asyncio.run(drive(args, url, proc.pid))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    report["server_exit_code"] = code
    samples = report.pop("samples")
    print(json.dumps(report, indent=1))
    print("samples (t_s, rss_mib, fds):", json.dumps(samples))


if __name__ == "__main__":
    main()
