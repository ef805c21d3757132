"""``python run.py listen STREAM_ID | --follow [NAME]``: follow a live stream's events; print them, or forward
onsets to OSC.

``--osc HOST:PORT`` sends each onset and beat, in the server's OSC layout (docs/protocol.md, "OSC"), to an
address the user chooses on their side — the client, not the server, sends it.

With a STREAM_ID the command ends with the stream. ``--follow`` makes a bridge that lasts: it follows the
newest live stream (or the newest named NAME, the stream option ``name``), moves to a newer one as soon as
it appears (a browser that reconnects starts a new stream), waits while there is none or the server is
away, and ends only on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from server.cli.time_format import add_time_format_option, time_text
from server.client import ClientError, Subscription, TransientClient
from server.client.options import (
    CONNECTION_ERRORS,
    add_server_options,
    client_token,
    failure_text,
    run_until_signal,
    server_url,
)
from server.events.osc import OscSender, parse_target

OSC_TARGET_NAME = "listen"
POLL_INTERVAL_S = 0.5  # --follow: how often the stream list is read for a newer stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stream_id", metavar="STREAM_ID", nargs="?", default=None,
                        help="the live stream (see GET /api/v3/streams); not with --follow")
    parser.add_argument("--follow", nargs="?", const="", default=None, metavar="NAME",
                        help="follow the newest live stream (with NAME: the newest named NAME, see 'stream "
                        "--name' and the stream option 'name'); move to each newer one, wait while there is "
                        "none or the server is away; end only on a signal")
    add_server_options(parser)
    parser.add_argument("--osc", default=None, metavar="HOST:PORT[/bundle[+MS]][@PREFIX]",
                        help="forward each onset and beat as OSC to this address (addresses under PREFIX, "
                        "default /transient); /bundle wraps each event in a bundle time-tagged with its "
                        "wall-clock time (+MS milliseconds)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one 'time<TAB>strength<TAB>wall_time' line per onset, notes on stderr; "
                        "json: every event as one JSON object per line")
    add_time_format_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print no events (e.g. with --osc)")
    parser.set_defaults(parser=parser)


def print_event(event: dict[str, Any], fmt: str, time_format: str = "s", sample_rate: int = 0) -> None:
    """One event on stdout (json: all of them; text: onsets, with notable events on stderr)."""
    kind = event["type"]
    if fmt == "json":
        print(json.dumps(event), flush=True)
    elif kind == "onset":
        time = time_text(float(event["time"]), time_format, sample_rate)
        print(f"{time}\t{event['strength']:.6f}\t{event['wall_time']:.6f}", flush=True)
    elif kind in ("warning", "error", "overflow"):
        print(f"{kind}: {json.dumps(event)}", file=sys.stderr, flush=True)
    elif kind == "ended":
        print(f"stream ended ({event.get('reason')}): {event.get('duration')} s, "
              f"{event.get('onsets')} onsets", file=sys.stderr, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def forward(subscription: Subscription, args: argparse.Namespace, osc: OscSender | None) -> None:
    """Print (and forward to OSC) every event of the subscription until it ends or its socket closes."""
    sample_rate = int(subscription.stream.get("sample_rate") or 0)
    async for event in subscription:
        if not args.quiet:
            print_event(event, args.format, args.time_format, sample_rate)
        if osc is not None and event["type"] == "onset":
            osc.send_onset([OSC_TARGET_NAME], str(event["stream_id"]), float(event["time"]),
                           float(event["strength"]), float(event["wall_time"]), event.get("band"))
        elif osc is not None and event["type"] == "beat":
            osc.send_beat([OSC_TARGET_NAME], str(event["stream_id"]), float(event["bpm"]),
                          float(event["confidence"]), float(event["wall_time"]), event.get("bar_position"))


def newest(streams: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The most recently started live stream (named ``name``, unless it is empty), or ``None``."""
    matching = [s for s in streams if not name or (s.get("settings") or {}).get("name") == name]
    return max(matching, key=lambda s: float(s.get("started_at") or 0.0), default=None)


def described(stream: dict[str, Any]) -> str:
    name = (stream.get("settings") or {}).get("name")
    return f"{stream['stream_id']}" + (f" ({name})" if name else "")


async def follow_newest(client: TransientClient, args: argparse.Namespace, osc: OscSender | None,
                        url: str) -> int:
    """``--follow``: always on the newest matching stream; never returns by itself."""
    name: str = args.follow
    waiting_for = f"a live stream named {name!r}" if name else "a live stream"
    said = ""  # the last waiting note, so it is printed once per wait

    def once(text: str) -> None:
        nonlocal said
        if text != said:
            note(text)
            said = text

    while True:
        try:
            target = newest(await client.streams(), name)
            if target is None:
                once(f"waiting for {waiting_for}")
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            subscription = await client.subscribe(str(target["stream_id"]))
        except ClientError as exc:
            if exc.status in (401, 403):
                raise  # a refused token does not get better by waiting
            once(f"waiting for {waiting_for} ({failure_text(exc, url)})")
            await asyncio.sleep(POLL_INTERVAL_S)
            continue
        except CONNECTION_ERRORS as exc:
            once(f"waiting for the server ({failure_text(exc, url)})")
            await asyncio.sleep(POLL_INTERVAL_S)
            continue
        said = ""
        note(f"following stream {described(target)}")
        async with subscription:
            await until_newer(subscription, forward(subscription, args, osc), client, name, target)


async def until_newer(subscription: Subscription, forwarding: Any, client: TransientClient, name: str,
                      current: dict[str, Any]) -> None:
    """Run ``forwarding`` until the stream ends, its socket closes, or a newer matching stream starts."""
    forwarder = asyncio.ensure_future(forwarding)
    try:
        while not forwarder.done():
            await asyncio.wait((forwarder,), timeout=POLL_INTERVAL_S)
            if forwarder.done():
                break
            with contextlib.suppress(ClientError, *CONNECTION_ERRORS):
                latest = newest(await client.streams(), name)
                if latest is not None and latest["stream_id"] != current["stream_id"] \
                        and float(latest.get("started_at") or 0) > float(current.get("started_at") or 0):
                    note(f"a newer stream started: {described(latest)}")
                    return
        with contextlib.suppress(*CONNECTION_ERRORS):
            forwarder.result()
    finally:
        if not forwarder.done():
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, *CONNECTION_ERRORS):
                await forwarder


async def follow_one(client: TransientClient, args: argparse.Namespace, osc: OscSender | None,
                     url: str) -> int:
    """One stream by id, until it ends: 0, or 1 when the connection closes first."""
    try:
        subscription = await client.subscribe(args.stream_id)
    except (ClientError, *CONNECTION_ERRORS) as exc:
        note(f"cannot subscribe to {args.stream_id!r}: {failure_text(exc, url)}")
        return 1
    note(f"listening to stream {args.stream_id}")
    async with subscription:
        await forward(subscription, args, osc)
    if subscription.ended is None:
        note(f"the connection closed before the stream ended (code {subscription.socket.close_code}); "
             "'listen --follow' keeps following across reconnects")
        return 1
    return 0


async def listen(args: argparse.Namespace, interrupted: asyncio.Event) -> int:
    parser: argparse.ArgumentParser = args.parser
    token = client_token(parser, args)
    url = server_url(args)
    osc: OscSender | None = None
    if args.osc is not None:
        try:
            target = parse_target(OSC_TARGET_NAME, args.osc)
        except ValueError as exc:
            parser.error(f"--osc: {exc}")
        osc = OscSender({OSC_TARGET_NAME: target})
        await osc.start(resolve_names=True)
    try:
        async with TransientClient(url, codec=args.codec, token=token) as client:
            run = follow_newest if args.follow is not None else follow_one
            following = asyncio.ensure_future(run(client, args, osc, url))
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
    if (args.stream_id is None) == (args.follow is None):
        args.parser.error("give either a STREAM_ID or --follow [NAME]")
    return run_until_signal(lambda interrupted: listen(args, interrupted), args.parser.prog, server_url(args))
