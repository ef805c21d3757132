"""The event loop's side of a live stream's first chunks, run once when the server starts.

A server process that has served no WebSocket has never run aiohttp's HTTP request parser, its WebSocket
frame reader (compiled extensions) or the numpy code of the audio check and the ring buffer: the first
stream faulted in those pages of library code, ~200 KiB of the event loop's memory that the next streams
do not add again (``bench/memory_per_stream.py --steps 1``; bench/README.md, "Memory per stream"). This
runs that code once, in this process, on a made-up upgrade request and masked audio frames, with no
socket and no stream: nothing is listed, counted or logged. The detector's plans are built beside it
(:func:`server.stream.settings.warm_up_timing`), the workers' code in the workers
(:func:`server.stream.in_worker.warm_up`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from typing import Any

import numpy as np
from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http import HttpRequestParser

from server.protocol.stream_messages import AudioFormat, Encoding
from server.stream.ring import RingBuffer
from server.transport.audio_decode import AudioDecoder, DecodeScratch
from server.transport.audio_tap import AudioTap
from server.transport.ws_masking import MaskedFramesOnly

log = logging.getLogger(__name__)

UPGRADE = (b"GET /api/v3/stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
START = b'{"type":"start","sample_rate":48000,"channels":1,"encoding":"pcm_f32le"}'
CHUNK_S = 0.02  # a client's usual audio message
CHUNKS = 8  # per format: past the ring's first wrap of a chunk's frames is not needed, a few reads are


class _Reading:
    """The little of aiohttp's request handler that its parsers call on (flow control)."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def masked_frame(opcode: WSMsgType, payload: bytes) -> bytes:
    """One final client frame (masked, as a client must send it) of ``payload``."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    words = np.frombuffer(payload + bytes(-size % 4), np.uint32) ^ np.frombuffer(mask, np.uint32)[0]
    return header + mask + words.tobytes()[:size]


def warm_up_ingest(loop: asyncio.AbstractEventLoop, sample_rate_hz: int = 48000) -> None:
    """Parse an upgrade request and, per sample encoding, a start message and ``CHUNKS`` masked audio
    messages of ``CHUNK_S`` (mono clicks) as a publisher's socket would, each checked and written to a
    ring buffer and read back as a job takes it. Failures are logged, never raised: it only saves work."""
    try:
        _warm_up(loop, sample_rate_hz)
    except Exception:
        log.warning("the stream path's warm-up failed (the first stream will run it cold)", exc_info=True)


def _warm_up(loop: asyncio.AbstractEventLoop, sample_rate_hz: int) -> None:
    reading: Any = _Reading()
    parser = HttpRequestParser(reading, loop, DEFAULT_CHUNK_SIZE, max_line_size=8190, max_field_size=8190)
    parser.feed_data(UPGRADE)
    frames = round(CHUNK_S * sample_rate_hz)
    clicks = np.zeros(frames, np.float32)
    clicks[: frames // 20] = 0.5
    scratch = DecodeScratch()
    for encoding in Encoding:
        audio_format = AudioFormat(sample_rate_hz, 1, encoding)
        decode = AudioDecoder(audio_format, scratch)
        ring = RingBuffer(round(sample_rate_hz * CHUNK_S * CHUNKS), 1, audio_format.encoding.dtype)
        payload = (clicks if encoding is Encoding.PCM_F32LE else (clicks * 32767).astype("<i2")).tobytes()

        def tap(data: bytes, decode: AudioDecoder = decode, ring: RingBuffer = ring) -> bool:
            samples, _ = decode(data)
            ring.write(samples)
            ring.read_bytes()  # as the stream's job takes its audio (server.stream.handoff)
            return True

        queue = AudioTap(reading, DEFAULT_CHUNK_SIZE, loop=loop)
        reader = MaskedFramesOnly(WebSocketReader(queue, 1 << 20, compress=False, decode_text=False), queue)
        reader.feed_data(masked_frame(WSMsgType.TEXT, START))
        queue.tap = tap
        while queue._buffer:  # the start message, as the receive task takes it
            queue._buffer.popleft()
        for _ in range(CHUNKS):
            reader.feed_data(masked_frame(WSMsgType.BINARY, payload))
