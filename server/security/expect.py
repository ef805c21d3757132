"""``Expect: 100-continue`` answered only after the access checks.

aiohttp calls a route's expect handler before any middleware, so by default a client with no token, or a
wrong one, is told ``100 Continue`` and sends its whole body before the access middleware refuses it. A
guarded route runs :func:`server.security.access.check` first and refuses from the headers instead (401,
403 or 429 in place of ``100 Continue``, and the connection is closed after it, as the body never came).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from server.protocol.errors import json_error
from server.security.access import check

ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


async def continue_expected(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's default answer: ``100 Continue`` to ``Expect: 100-continue`` (HTTP/1.1), else 417."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        return json_error(417, "expectation_failed", "only 'Expect: 100-continue' is understood")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response
    return None


def guard_expect(then: ExpectHandler = continue_expected) -> ExpectHandler:
    """An expect handler that refuses a request failing the access checks, else defers to ``then``."""

    async def guarded(request: web.Request) -> web.StreamResponse | None:
        refusal = check(request)
        if refusal is not None:
            refusal.force_close()
            return refusal
        return await then(request)

    return guarded
