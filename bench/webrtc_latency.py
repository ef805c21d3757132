"""Onset latency over WebRTC next to WebSocket, on the same audio, in the same run.

Usage::

    .venv/bin/python bench/webrtc_latency.py [--streams 1] [--duration-s 10] [--rounds 2] [--workers 2]
                                             [--lose-packet-at-s 3] [--no-aiortc-buffer]
                                             [--json bench/results/webrtc_latency.json]

The server runs as a subprocess (``python run.py --port 0 ...``); this process is the client. Every
stream sends the same 48 kHz mono click pattern (a click every 0.5 s) in 20 ms chunks paced in real time:

- WebSocket: ``pcm_f32le`` binary frames on ``/api/v3/stream``; onsets come back on the socket.
- WebRTC: an aiortc peer connection whose audio track yields the same chunks as 20 ms frames (Opus, as a
  browser sends); onsets come back on the ``events`` data channel.

Latency of an onset: its event's receive time minus the send time of the chunk that completes the
detector's look-ahead for its click (found beforehand by feeding the chunks to a local detector). For
WebRTC the "send time" is when the track handed the frame to aiortc's encoder, so the figure includes
encoding, RTP, the receive jitter buffer, decoding and the data channel. Rounds alternate the transports
(WebSocket, then WebRTC) and the percentiles pool every round's onsets.

WebRTC runs twice: against a server with the default ``--webrtc-jitter-buffer immediate`` and against a
second server with ``aiortc`` (aiortc's own buffer; skip with ``--no-aiortc-buffer``). With
``--lose-packet-at-s T`` every WebRTC client drops the RTP packet it would send at T seconds (a lossy
network), which is what separates the two buffers most.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procs import start_server  # noqa: E402
from server.dsp import OnsetDetector  # noqa: E402
from testkit.webrtc_client import ArrayTrack, WebRtcClient  # noqa: E402

SAMPLE_RATE = 48000
CHUNK = 960  # frames per 20 ms chunk: the WebSocket chunk and the WebRTC frame
CLICK_EVERY_S = 0.5
MATCH_S = 0.030  # a reported onset within this of a click is that click's onset


@dataclass
class Result:
    transport: str
    streams: int
    lose_packet_at_s: float | None = None
    clicks: int = 0
    missed: int = 0
    extra: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def click_pattern(duration_s: float) -> tuple[np.ndarray, list[float]]:
    frames = round(duration_s * SAMPLE_RATE)
    frames -= frames % CHUNK
    samples = np.zeros(frames, np.float32)
    clicks: list[float] = []
    t = 0.137
    while t < duration_s - 0.4:
        start = round(t * SAMPLE_RATE)
        samples[start:start + 16] = 0.8
        clicks.append(start / SAMPLE_RATE)
        t += CLICK_EVERY_S
    return samples, clicks


def completing_chunks(samples: np.ndarray, clicks: list[float]) -> dict[float, int]:
    """Click time → index of the chunk after which a detector fed chunk by chunk first reports it."""
    detector = OnsetDetector(SAMPLE_RATE, 1)
    out: dict[float, int] = {}
    for k in range(len(samples) // CHUNK):
        for onset in detector.process(samples[k * CHUNK:(k + 1) * CHUNK]):
            near = [c for c in clicks if abs(c - onset.time) <= MATCH_S]
            if near:
                out.setdefault(near[0], k)
    return out


def score(result: Result, onsets: list[tuple[float, float]], sent_at: dict[int, float], clicks: list[float],
          completing: dict[float, int], sent_chunks: int) -> None:
    """``onsets``: (stream time, receive time); ``sent_at``: chunk index → send time."""
    played = [c for c in clicks if c in completing and completing[c] < sent_chunks]
    result.clicks += len(played)
    matched: set[float] = set()
    for onset_s, received in onsets:
        near = [c for c in played if abs(c - onset_s) <= MATCH_S]
        if not near or near[0] in matched:
            result.extra += 1
            continue
        matched.add(near[0])
        k = completing[near[0]]
        if k in sent_at:
            result.latencies_ms.append((received - sent_at[k]) * 1000.0)
    result.missed += len(played) - len(matched)


async def websocket_stream(http: aiohttp.ClientSession, url: str, samples: np.ndarray, clicks: list[float],
                           completing: dict[float, int], result: Result) -> None:
    ws = await http.ws_connect(url + "/api/v3/stream")
    await ws.send_str(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1,
                                  "encoding": "pcm_f32le"}))
    started = json.loads((await ws.receive(timeout=60)).data)
    assert started["type"] == "started", started
    onsets: list[tuple[float, float]] = []

    async def receive() -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            event = json.loads(message.data)
            if event["type"] == "onset":
                onsets.append((event["time"], time.perf_counter()))
            elif event["type"] in ("stopped", "error"):
                return

    receiver = asyncio.create_task(receive())
    sent_at: dict[int, float] = {}
    t0 = time.perf_counter()
    chunks = len(samples) // CHUNK
    for k in range(chunks):
        delay = t0 + k * CHUNK / SAMPLE_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[k] = time.perf_counter()
        await ws.send_bytes(samples[k * CHUNK:(k + 1) * CHUNK].tobytes())
    await ws.send_str('{"type":"stop"}')
    await asyncio.wait_for(receiver, 60)
    await ws.close()
    score(result, onsets, sent_at, clicks, completing, chunks)


async def webrtc_stream(http: aiohttp.ClientSession, url: str, samples: np.ndarray, clicks: list[float],
                        completing: dict[float, int], result: Result) -> None:
    track = ArrayTrack(samples)
    client = WebRtcClient.offerer(track)
    if result.lose_packet_at_s is not None:
        client.drop_rtp({1 + round(result.lose_packet_at_s * SAMPLE_RATE / CHUNK)})
    await client.connect(http, url)
    try:
        while not track.finished:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # let the last frames through aiortc's jitter buffer
        client.send({"type": "stop"})
        await client.receive_until("<closed>", timeout_s=60)
    finally:
        await client.close()
    # The track's clock is perf_counter-independent: convert its monotonic send times.
    offset = time.perf_counter() - time.monotonic()
    onsets = [(m["time"], at + offset) for at, m in client.received_at if m["type"] == "onset"]
    sent_at = {pts // CHUNK: at + offset for pts, at in track.sent_at.items()}
    score(result, onsets, sent_at, clicks, completing, len(samples) // CHUNK)


async def run_round(url: str, transport: str, streams: int, samples: np.ndarray, clicks: list[float],
                    completing: dict[float, int], result: Result) -> None:
    run = websocket_stream if transport == "websocket" else webrtc_stream
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(run(http, url, samples, clicks, completing, result) for _ in range(streams)))





def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(result: Result) -> dict[str, object]:
    lat = result.latencies_ms
    row: dict[str, object] = {k: v for k, v in asdict(result).items() if k != "latencies_ms"}
    row.update(onsets_timed=len(lat), p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
               max_ms=max(lat) if lat else float("nan"))
    return row


def report(results: list[Result]) -> None:
    print(f"{'transport':<26}{'onsets':>7}{'missed':>7}{'extra':>6}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}")
    for result in results:
        lat = result.latencies_ms
        print(f"{result.transport:<26}{len(lat):>7}{result.missed:>7}{result.extra:>6}"
              f"{percentile(lat, 50):>8.1f}{percentile(lat, 99):>8.1f}{max(lat, default=float('nan')):>8.1f}")
    ws50, ws99 = percentile(results[0].latencies_ms, 50), percentile(results[0].latencies_ms, 99)
    for result in results[1:]:
        p50, p99 = percentile(result.latencies_ms, 50), percentile(result.latencies_ms, 99)
        print(f"{result.transport} vs websocket: p50 {p50 - ws50:+.1f} ms (x{p50 / ws50:.0f}), "
              f"p99 {p99 - ws99:+.1f} ms (x{p99 / ws99:.0f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams per transport")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lose-packet-at-s", type=float, default=None)
    parser.add_argument("--no-aiortc-buffer", action="store_true", help="skip the run with aiortc's buffer")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples, clicks = click_pattern(args.duration_s)
    completing = completing_chunks(samples, clicks)
    loss = args.lose_packet_at_s
    websocket = Result("websocket", args.streams)
    immediate = Result("webrtc (immediate buffer)", args.streams, loss)
    aiortc = Result("webrtc (aiortc buffer)", args.streams, loss)
    servers = [("immediate", [("websocket", websocket), ("webrtc", immediate)])]
    if not args.no_aiortc_buffer:
        servers.append(("aiortc", [("webrtc", aiortc)]))
    for buffer, runs in servers:
        proc, url = start_server(["--workers", str(args.workers), "--log-level", "WARNING",
                                  "--webrtc-jitter-buffer", buffer])
        try:
            for _ in range(args.rounds):
                for transport, result in runs:
                    uvloop.run(run_round(url, transport, args.streams, samples, clicks, completing, result))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.streams} stream(s) per transport, {args.duration_s:g} s each, {args.rounds} round(s)"
          + (f", WebRTC clients lose the packet at {loss:g} s" if loss is not None else ""))
    results = [websocket, immediate] + ([] if args.no_aiortc_buffer else [aiortc])
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"args": {k: str(v) for k, v in vars(args).items()},
                    "results": [summarise(r) for r in results]}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
