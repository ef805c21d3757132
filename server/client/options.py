"""Command-line pieces shared by the client commands (``run.py listen``, ``stream``, ``analyze``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop

from server.client.auth import TOKEN_ENV, default_token, normalise_token
from server.client.client import DEFAULT_SERVER, SERVER_ENV, default_server
from server.client.errors import ClientError
from server.client.wire import CODECS


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None, metavar="URL",
                        help=f"the server's base URL [env {SERVER_ENV}; default {DEFAULT_SERVER}]")
    parser.add_argument("--codec", choices=CODECS, default="json", help="WebSocket message codec")
    parser.add_argument("--token", default=None, metavar="TOKEN",
                        help=f"access token, sent as 'Authorization: Bearer TOKEN', for a server with tokens "
                        f"configured [env {TOKEN_ENV}, which keeps it out of the process list]")


SCHEMES = ("http", "https", "ws", "wss")


def check_server_url(url: str) -> str:
    """``url`` if it is a server address the client can use; else :class:`ValueError` with one sentence.

    The likeliest slip, an address without its scheme (``127.0.0.1:8080``), gets the fix in the message.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        guess = f"http://{url}" if "://" not in url else None
        hint = f"; did you mean {guess}?" if guess else ""
        raise ValueError(f"{url!r} is not a server URL: it needs http:// or https:// and a host{hint}")
    try:
        parts.port  # noqa: B018 (a port out of range or not a number raises here)
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a server URL: {exc}") from None
    return url


def server_url(args: argparse.Namespace) -> str:
    """``--server``, else ``TRANSIENT_SERVER``, else the default; a malformed one: usage error (exit 2)."""
    given = args.server is not None
    url = str(args.server if given else default_server())
    try:
        return check_server_url(url)
    except ValueError as exc:  # one line, no usage block: the likeliest slip gets the shortest answer
        parser: argparse.ArgumentParser = args.parser
        parser.exit(2, f"{parser.prog}: error: {'--server' if given else SERVER_ENV}: {exc}\n")


def failure_text(exc: BaseException, url: str) -> str:
    """One sentence for a request that failed: the server's refusal, or what happened to the connection."""
    if isinstance(exc, ClientError):
        return refusal_text(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        reason = os.strerror(code).lower() if code else str(exc.os_error)
        return (f"cannot connect to {url} ({reason}); is the server running there? "
                f"(--server URL or {SERVER_ENV})")
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError | aiohttp.ClientOSError
                  | aiohttp.ClientPayloadError | aiohttp.ServerConnectionError):
        return f"the server at {url} hung up (it closed the connection without answering)"
    if isinstance(exc, TimeoutError):
        return f"the server at {url} did not answer in time"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"talking to {url} failed: {str(exc) or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def client_token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``--token`` (``--token ''``: none), else ``TRANSIENT_TOKEN``, else ``""`` (what
    :class:`TransientClient` takes as "send no token"). A token unfit for a header: usage error (exit 2)."""
    given = args.token is not None
    try:
        return (normalise_token(args.token) if given else default_token()) or ""
    except ValueError as exc:
        parser.error(f"{'--token' if given else TOKEN_ENV}: {exc}")


def refusal_text(exc: Exception) -> str:
    """One line for a failed request; a refused token (401, 403) also says what to change."""
    if isinstance(exc, ClientError) and exc.status == 401:
        return f"{exc} (HTTP 401; set the token with --token or {TOKEN_ENV})"
    if isinstance(exc, ClientError) and exc.status == 403 and exc.code == "forbidden":
        return f"{exc} (HTTP 403; use a token with that right)"
    return str(exc)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]], prog: str = "run.py",
                     url: str = "") -> int:
    """Run ``main(interrupted)`` on uvloop. The first SIGINT or SIGTERM sets ``interrupted`` (the command
    winds down: a publisher sends ``stop``); a second one cancels it (exit code 130). A connection failure
    that ``main`` did not handle becomes one line on stderr (``PROG: ...``, see :func:`failure_text`) and
    exit code 1, never a traceback."""

    async def guarded() -> int:
        interrupted = asyncio.Event()
        task = asyncio.ensure_future(main(interrupted))

        def on_signal() -> None:
            if interrupted.is_set():
                task.cancel()
            interrupted.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await task
        except asyncio.CancelledError:
            return 130
        except BrokenPipeError:  # stdout's reader went away (e.g. `| head`): quietly, like other tools
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except (ClientError, *CONNECTION_ERRORS) as exc:
            print(f"{prog}: {failure_text(exc, url)}", file=sys.stderr, flush=True)
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)

    return uvloop.run(guarded())
