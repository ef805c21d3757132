"""``python run.py [options]``: serve HTTP, WebSocket and WebRTC on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import uvloop
from aiohttp import web

from server.app import make_app
from server.config import Config, add_config_options, config_from
from server.observability import logs

log = logging.getLogger("server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)


async def serve(config: Config) -> None:
    """Run the server until cancelled (SIGINT/SIGTERM)."""
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    for address in runner.addresses:
        host, port = address[0], address[1]
        # One parsable line: tests and scripts read the bound port from it.
        print(f"serving on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    logs.configure(config.log_level)
    with contextlib.suppress(KeyboardInterrupt, web.GracefulExit):
        uvloop.run(serve(config))
    return 0
