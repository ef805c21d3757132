"""The naive peer: the live-onset server a user writes in an afternoon, aiohttp + aubio, one process.

Usage::

    .venv/bin/python bench/naive_aubio_server.py [--port 0] [--method hfc|none] [--buffer 512] [--hop 256]

Every stream's aubio ``onset`` object is called on the event loop as its audio arrives; nothing is
batched, nothing leaves the process. It speaks the subset of Transient's live-stream protocol
(docs/protocol.md, "Live streams") that ``bench/capacity_per_core.py`` uses, on ``GET /api/v3/stream``:

- a text ``start`` {``sample_rate``, ``channels``, ``encoding`` ``pcm_f32le`` or ``pcm_s16le``} first,
  answered by ``started`` {``stream_id``, ``latency_ms`` (aubio's reporting delay, 4 hops), ``hop_ms``};
- binary frames of interleaved PCM (averaged to mono), answered by ``onset`` {``stream_id``, ``time``,
  ``strength``} as aubio finds them;
- a text ``stop``: the remaining whole hops are analysed, then ``status`` (``dropped_s`` 0: it never
  drops), ``stopped`` and close 1000.

``--method none`` makes it a sink: the same reading and decoding of every chunk, no aubio and no events.
Its CPU per chunk is what aiohttp and the decoding cost before any DSP. ``--uvloop`` runs it on uvloop, as
Transient runs (the peer itself uses asyncio's own loop, as a user's afternoon server would).

Prints ``serving on http://HOST:PORT`` once it listens (as ``run.py`` does). Not part of the server: a
benchmark peer, measured in the same run as ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys

import aubio
import numpy as np
import uvloop
from aiohttp import WSMsgType, web

DTYPES = {"pcm_f32le": (np.dtype("<f4"), 1.0), "pcm_s16le": (np.dtype("<i2"), 1.0 / 32768.0)}
SINK = "none"  # --method none: decode every chunk, analyse nothing
AUBIO_DELAY_HOPS = 4  # aubio's onset object reports an onset this many hops after the frame it dates


class NaiveStream:
    """One stream: its aubio onset object and the samples short of a whole hop."""

    def __init__(self, stream_id: str, sample_rate: int, channels: int, encoding: str,
                 method: str, buffer_frames: int, hop_frames: int) -> None:
        self.stream_id = stream_id
        self.channels = channels
        self.dtype, self.scale = DTYPES[encoding]
        self.hop = hop_frames
        self.onset = None if method == SINK else aubio.onset(method, buffer_frames, hop_frames, sample_rate)
        self.pending = np.zeros(0, dtype=np.float32)
        self.frames = 0
        self.sample_rate = sample_rate
        self.onsets = 0

    def feed(self, data: bytes) -> list[dict[str, object]]:
        samples = np.frombuffer(data, self.dtype).astype(np.float32) * np.float32(self.scale)
        mono = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        self.frames += len(mono)
        if self.onset is None:  # the sink
            return []
        buffered = np.concatenate((self.pending, mono))
        events = []
        whole = len(buffered) - len(buffered) % self.hop
        for start in range(0, whole, self.hop):
            if self.onset(buffered[start:start + self.hop])[0]:
                self.onsets += 1
                events.append({"type": "onset", "stream_id": self.stream_id,
                               "time": float(self.onset.get_last_s()),
                               "strength": float(self.onset.get_descriptor())})
        self.pending = buffered[whole:].copy()
        return events


async def stream_handler(request: web.Request) -> web.StreamResponse:
    config = request.app["config"]
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    stream: NaiveStream | None = None
    async for message in ws:
        if message.type == WSMsgType.BINARY and stream is not None:
            for event in stream.feed(message.data):
                await ws.send_str(json.dumps(event))
        elif message.type == WSMsgType.TEXT:
            body = json.loads(message.data)
            if body.get("type") == "start" and stream is None:
                stream_id = f"naive-{next(request.app['ids'])}"
                stream = NaiveStream(stream_id, int(body["sample_rate"]), int(body.get("channels", 1)),
                                     body.get("encoding", "pcm_f32le"), config.method, config.buffer,
                                     config.hop)
                hop_ms = 1000.0 * config.hop / stream.sample_rate
                await ws.send_str(json.dumps({
                    "type": "started", "stream_id": stream_id, "sample_rate": stream.sample_rate,
                    "channels": stream.channels, "encoding": body.get("encoding", "pcm_f32le"),
                    "latency_ms": AUBIO_DELAY_HOPS * hop_ms, "hop_ms": hop_ms}))
            elif body.get("type") == "stop" and stream is not None:
                received_s = stream.frames / stream.sample_rate
                await ws.send_str(json.dumps({
                    "type": "status", "stream_id": stream.stream_id, "received_s": received_s,
                    "analysed_s": received_s, "lag_s": 0.0, "dropped_s": 0.0, "onsets": stream.onsets}))
                await ws.send_str(json.dumps({"type": "stopped", "duration": received_s,
                                              "onsets": stream.onsets}))
                await ws.close()
                break
    return ws


async def serve(args: argparse.Namespace) -> None:
    app = web.Application()
    app["config"] = args
    app["ids"] = itertools.count(1)
    app.router.add_get("/api/v3/stream", stream_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"serving on http://{args.host}:{port}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--method", default="hfc", help=f"an aubio onset method, or {SINK!r} (a sink)")
    parser.add_argument("--buffer", type=int, default=512, help="aubio window, frames")
    parser.add_argument("--hop", type=int, default=256, help="aubio hop, frames")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (default: asyncio's loop)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        (uvloop.run if args.uvloop else asyncio.run)(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
