"""``python run.py listen STREAM_ID``: follow a live stream's events; print them, or forward onsets to OSC.

``--osc HOST:PORT`` sends each onset, in the server's OSC layout (docs/protocol.md, "OSC"), to an address
the user chooses on their side — the client, not the server, sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from server.client import ClientError, Subscription, TransientClient
from server.client.options import add_server_options, client_token, refusal_text, run_until_signal, server_url
from server.events.osc import OscSender, parse_target

OSC_TARGET_NAME = "listen"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stream_id", metavar="STREAM_ID", help="the live stream (see GET /api/v3/streams)")
    add_server_options(parser)
    parser.add_argument("--osc", default=None, metavar="HOST:PORT[/bundle[+MS]]",
                        help="forward each onset as OSC to this address; /bundle wraps it in a bundle time-"
                        "tagged with the onset's wall-clock time (+MS milliseconds)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one 'time<TAB>strength<TAB>wall_time' line per onset, notes on stderr; "
                        "json: every event as one JSON object per line")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no events (e.g. with --osc)")
    parser.set_defaults(parser=parser)


def print_event(event: dict[str, Any], fmt: str) -> None:
    """One event on stdout (json: all of them; text: onsets, with notable events on stderr)."""
    kind = event["type"]
    if fmt == "json":
        print(json.dumps(event), flush=True)
    elif kind == "onset":
        print(f"{event['time']:.6f}\t{event['strength']:.6f}\t{event['wall_time']:.6f}", flush=True)
    elif kind in ("warning", "error", "overflow"):
        print(f"{kind}: {json.dumps(event)}", file=sys.stderr, flush=True)
    elif kind == "ended":
        print(f"stream ended ({event.get('reason')}): {event.get('duration')} s, "
              f"{event.get('onsets')} onsets", file=sys.stderr, flush=True)


async def follow(subscription: Subscription, args: argparse.Namespace, osc: OscSender | None) -> int:
    async for event in subscription:
        if not args.quiet:
            print_event(event, args.format)
        if osc is not None and event["type"] == "onset":
            osc.send_onset([OSC_TARGET_NAME], str(event["stream_id"]), float(event["time"]),
                           float(event["strength"]), float(event["wall_time"]))
    if subscription.ended is None:
        print(f"the connection closed before the stream ended (code {subscription.socket.close_code})",
              file=sys.stderr)
        return 1
    return 0


async def listen(args: argparse.Namespace, interrupted: asyncio.Event) -> int:
    token = client_token(args.parser, args)
    osc: OscSender | None = None
    if args.osc is not None:
        try:
            target = parse_target(OSC_TARGET_NAME, args.osc)
        except ValueError as exc:
            args.parser.error(f"--osc: {exc}")
        osc = OscSender({OSC_TARGET_NAME: target})
        await osc.start(resolve_names=True)
    try:
        async with TransientClient(server_url(args), codec=args.codec, token=token) as client:
            try:
                subscription = await client.subscribe(args.stream_id)
            except (ClientError, OSError) as exc:
                print(f"cannot subscribe to {args.stream_id!r}: {refusal_text(exc)}", file=sys.stderr)
                return 1
            print(f"listening to stream {args.stream_id}", file=sys.stderr, flush=True)
            async with subscription:
                following = asyncio.ensure_future(follow(subscription, args, osc))
                stopping = asyncio.ensure_future(interrupted.wait())
                await asyncio.wait((following, stopping), return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not following.done():
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
                    return 0
                return following.result()
    finally:
        if osc is not None:
            await osc.close()


def main(args: argparse.Namespace) -> int:
    return run_until_signal(lambda interrupted: listen(args, interrupted))
