"""``python run.py stream FILE|-``: publish a file, or raw PCM from stdin, as a live stream; print its onsets.

Audio goes out in ``--chunk-ms`` chunks, paced to real time (``--speed`` times it; 0 sends as fast as the
socket takes it), each chunk sent once its last sample is due, as a capture device would. The stream id
and a summary go to stderr; onsets to stdout as they come back. SIGINT/SIGTERM stops the stream cleanly
(the server analyses what it received and the last onsets are still printed); a second one aborts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from server.cli.listen import print_event
from server.cli.settings_flags import add_settings_options, settings_from_args
from server.cli.time_format import add_time_format_option
from server.client import ClientError, Pacer, Publisher, TransientClient
from server.client.audio_file import AudioFile
from server.client.options import (
    CONNECTION_ERRORS,
    add_server_options,
    client_token,
    failure_text,
    run_until_signal,
    server_url,
)
from server.jobs.probe import DecodeError
from server.protocol.encoding import Encoding

DECODE_BLOCK_S = 1.0  # audio decoded from a file per step (off the event loop)


class RawInput:
    """Raw interleaved PCM from a byte stream (stdin), in whole frames."""

    def __init__(self, stream: BinaryIO, sample_rate: int, channels: int, encoding: Encoding) -> None:
        self.stream = stream
        self.sample_rate = sample_rate
        self.channels = channels
        self.encoding = encoding
        self.frame_bytes = channels * encoding.bytes_per_sample
        self.leftover_bytes = 0

    def blocks(self, block_frames: int) -> Iterator[bytes]:
        """Blocks of up to ``block_frames`` frames as they arrive; a trailing partial frame is dropped."""
        want = block_frames * self.frame_bytes
        pending = b""
        while True:
            data = self.stream.read1(want - len(pending)) if hasattr(self.stream, "read1") \
                else self.stream.read(want - len(pending))
            if not data:
                self.leftover_bytes = len(pending)
                return
            pending += data
            whole = len(pending) - len(pending) % self.frame_bytes
            if whole:
                yield pending[:whole]
                pending = pending[whole:]


async def in_thread(blocks: Iterator[Any]) -> AsyncIterator[Any]:
    """Iterate a blocking iterator (reads, decoding) off the event loop."""
    end = object()
    while (block := await asyncio.to_thread(next, blocks, end)) is not end:
        yield block


def chunks(block: np.ndarray | bytes, frames: int, frame_bytes: int) -> Iterator[np.ndarray | bytes]:
    if isinstance(block, bytes):
        step = frames * frame_bytes
        return (block[i:i + step] for i in range(0, len(block), step))
    return (block[i:i + frames] for i in range(0, len(block), frames))


async def print_events(publisher: Publisher, args: argparse.Namespace, sample_rate: int) -> None:
    async for event in publisher.events():
        if args.quiet:
            continue
        if event["type"] != "stopped":
            print_event(event, args.format, args.time_format, sample_rate)
        elif args.format == "json":
            print(json.dumps(event), flush=True)


async def publish(args: argparse.Namespace, interrupted: asyncio.Event) -> int:
    parser: argparse.ArgumentParser = args.parser
    settings = settings_from_args(parser, args)
    if args.name is not None:
        settings = {**(settings or {}), "name": args.name}
    if args.link:
        settings = {**(settings or {}), "link": True}
    token = client_token(parser, args)
    url = server_url(args)
    source: AudioFile | RawInput
    if args.source == "-":
        if args.rate is None:
            parser.error("raw PCM on stdin needs --rate (and --channels, --encoding if not 1, pcm_s16le)")
        source = RawInput(sys.stdin.buffer, args.rate, args.channels, Encoding(args.encoding))
        encoding = source.encoding
    else:
        try:
            source = await asyncio.to_thread(AudioFile, Path(args.source))
        except (DecodeError, OSError) as exc:
            print(f"{args.source}: {getattr(exc, 'code', 'unreadable')}: {exc}", file=sys.stderr)
            return 1
        encoding = Encoding.PCM_F32LE
    async with TransientClient(url, codec=args.codec, token=token) as client:
        try:
            flow = args.flow_control if args.flow_control is not None else not isinstance(source, RawInput)
            publisher = await client.publish(source.sample_rate, source.channels, encoding.value, settings,
                                             flow_control=flow)
        except (ClientError, *CONNECTION_ERRORS) as exc:
            print(f"cannot start the stream: {failure_text(exc, url)}", file=sys.stderr)
            return 1
        print(f"stream {publisher.stream_id}: {source.sample_rate} Hz, {source.channels} channel(s), "
              f"latency {publisher.started['latency_ms']} ms", file=sys.stderr, flush=True)
        printer = asyncio.ensure_future(print_events(publisher, args, source.sample_rate))
        chunk_frames = max(1, round(args.chunk_ms / 1000.0 * source.sample_rate))
        frame_bytes = source.channels * encoding.bytes_per_sample
        pacer = Pacer(source.sample_rate, args.speed) if args.speed > 0 else None
        sent_frames = 0
        try:
            blocks = source.blocks(max(chunk_frames, round(DECODE_BLOCK_S * source.sample_rate)))
            async for block in in_thread(blocks):
                for chunk in chunks(block, chunk_frames, frame_bytes):
                    frames = len(chunk) // frame_bytes if isinstance(chunk, bytes) else len(chunk)
                    if pacer is not None:
                        await pacer.wait(sent_frames + frames)
                    if interrupted.is_set():
                        break
                    await publisher.send_audio(chunk)
                    sent_frames += frames
                if interrupted.is_set():
                    break
            stopped = await publisher.stop()
        except (ClientError, DecodeError, *CONNECTION_ERRORS) as exc:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await publisher.close()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
            reason = str(exc) if isinstance(exc, DecodeError) else failure_text(exc, url)
            if isinstance(exc, ClientError) and exc.code == "closed":
                reason = f"the server at {url} hung up ({exc.message})"
            print(f"the stream ended early: {reason}", file=sys.stderr)
            return 1
        await printer
    if isinstance(source, RawInput) and source.leftover_bytes:
        print(f"dropped {source.leftover_bytes} trailing bytes (not a whole frame)", file=sys.stderr)
    dropped_s = publisher.dropped_s
    lost = f", {dropped_s:g} s of audio dropped by the server" if dropped_s > 0 else ""
    print(f"stopped: {stopped['duration']} s, {stopped['onsets']} onsets{lost}", file=sys.stderr, flush=True)
    if dropped_s > 0 and not publisher.flow_control:
        print(f"the server dropped {dropped_s:g} s of audio because it arrived faster than it was analysed; "
              "--flow-control waits instead", file=sys.stderr, flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE|-", help="an audio file, or - for raw PCM on stdin")
    add_server_options(parser)
    add_settings_options(parser, extra_keys="; stream options too, e.g. osc=[\"lights\"]")
    parser.add_argument("--name", default=None, metavar="NAME",
                        help="name the stream (stream option 'name'), so 'listen --follow NAME' finds it "
                        "again, also after a reconnect")
    parser.add_argument("--link", action="store_true",
                        help="publish the stream's tempo and beat phase to the server's Ableton Link session "
                        "(stream option 'link'; the server must run with --link)")
    parser.add_argument("--rate", type=int, default=None, help="sample rate of the raw PCM on stdin, Hz")
    parser.add_argument("--channels", type=int, default=1, help="channels of the raw PCM on stdin")
    parser.add_argument("--encoding", choices=[e.value for e in Encoding], default=Encoding.PCM_S16LE.value,
                        help="sample encoding of the raw PCM on stdin")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per message, ms")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="pace as this multiple of real time; 0 sends as fast as possible")
    parser.add_argument("--flow-control", action=argparse.BooleanOptionalAction, default=None,
                        help="wait for the server's acks instead of letting it drop audio that arrives "
                        "faster than it is analysed (default: on for a file, off for stdin, a live capture "
                        "that cannot wait)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one 'time<TAB>strength<TAB>wall_time' line per onset; json: every event")
    add_time_format_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print no events, only the first and last lines on stderr")
    parser.set_defaults(parser=parser)


def main(args: argparse.Namespace) -> int:
    if args.chunk_ms <= 0 or args.speed < 0 or args.channels < 1:
        args.parser.error("--chunk-ms and --channels must be positive, --speed not negative")
    url = server_url(args)
    return run_until_signal(lambda interrupted: publish(args, interrupted), args.parser.prog, url)
