"""Memory of oversized live streams: N streams of RATE Hz x CHANNELS float audio from one client at once.

Each stream sends ``--seconds`` of audio as fast as the socket takes it (1 MiB messages, one buffer reused,
so the client stays small), then ``stop``. Reports the resident memory of the server and its pool (the
process tree) before, at its peak while the streams run (sampled every 0.2 s) and ``--settle-s`` after
they ended (also the server process alone), plus how the streams ended.

    python bench/stream_memory.py --streams 16 --rate 192000 --channels 32 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import descendants, rss_bytes, start_server

MESSAGE_BYTES = 1 << 20


async def one_stream(http: aiohttp.ClientSession, url: str, rate: int, channels: int, seconds: float,
                     chunk: bytes) -> str:
    async with http.ws_connect(url + "/api/v3/stream", max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, "channels": channels,
                                      "encoding": "pcm_f32le"}))
        first = json.loads((await ws.receive(timeout=60)).data)
        if first["type"] != "started":
            return f"refused {first.get('code')}"
        total = int(seconds * rate * channels * 4)
        sent = 0
        while sent < total:
            await ws.send_bytes(chunk)
            sent += len(chunk)
        await ws.send_str(json.dumps({"type": "stop"}))
        last = ""
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                last = json.loads(message.data)["type"]
        return f"{last} {ws.close_code}"


async def drive(args: argparse.Namespace, url: str, pid: int) -> dict[str, object]:
    frame_bytes = args.channels * 4
    frames = MESSAGE_BYTES // frame_bytes
    rng = np.random.default_rng(0)
    chunk = (rng.standard_normal((frames, args.channels)) * 0.1).astype("<f4").tobytes()
    before = rss_bytes(descendants(pid))
    before_server = rss_bytes([pid])
    peak = before
    async with aiohttp.ClientSession() as http:
        runs = asyncio.gather(*(one_stream(http, url, args.rate, args.channels, args.seconds, chunk)
                                for _ in range(args.streams)))
        started = time.monotonic()
        while not runs.done():
            peak = max(peak, rss_bytes(descendants(pid)))
            await asyncio.sleep(0.2)
        endings = await runs
        elapsed = time.monotonic() - started
    await asyncio.sleep(args.settle_s)
    after = rss_bytes(descendants(pid))
    after_server = rss_bytes([pid])
    counts: dict[str, int] = {}
    for ending in endings:
        counts[ending] = counts.get(ending, 0) + 1
    return {"streams": args.streams, "rate": args.rate, "channels": args.channels, "seconds": args.seconds,
            "elapsed_s": round(elapsed, 1), "endings": counts,
            "rss_mib": {"before": round(before / 2**20, 1), "peak": round(peak / 2**20, 1),
                        "after": round(after / 2**20, 1)},
            "server_only_rss_mib": {"before": round(before_server / 2**20, 1),
                                    "after": round(after_server / 2**20, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rate", type=int, default=192000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    proc, url = start_server(["--workers", str(args.workers), "--data-dir", "/tmp/transient-stream-memory",
                              "--log-level", "WARNING"])
    try:
        report = asyncio.run(drive(args, url, proc.pid))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
