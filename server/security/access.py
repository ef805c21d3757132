"""The access middleware: request rate, WebSocket ``Origin``, and tokens with rights, before any handler.

Which right a path needs (see docs/protocol.md, "Security and limits"):

- ``/healthz``, ``/readyz`` and the browser pages (anything outside ``/api/`` and ``/metrics``): none.
- ``/api/v3/stream``, ``/api/v3/webrtc/...``: ``publish``.
- ``/api/v3/streams``, ``/api/v3/streams/{id}/events``: ``subscribe``.
- ``/api/v3/analysis...``, ``/api/v3/upload``: ``analyse``.
- ``/metrics`` and any other ``/api/`` path: any valid token.

A browser's ``Origin`` is checked on every WebSocket handshake and every state-changing request (any method
but GET, HEAD, OPTIONS): see :mod:`server.security.origin`. Tokens are only asked for when at least one is
configured. The rate limit applies to every ``/api/`` request (a WebSocket handshake included) per client
address. Stream, upload and subscriber WebSockets are counted from their handshake to their close, per client
and in all (:mod:`server.security.sockets`).

aiohttp answers ``Expect: 100-continue`` before any middleware runs: routes that take a body guard their
expect handler with :func:`server.security.expect.guard_expect`, which runs :func:`check` first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from server.appkeys import CONFIG
from server.config import Config
from server.observability.metrics import METRICS
from server.protocol.codec import clip
from server.protocol.errors import json_error
from server.security.exposure import warn_if_exposed
from server.security.origin import needs_origin_check, origin_allowed, parse_allowed
from server.security.rate import RateLimiter, retry_after_header
from server.security.sockets import SocketKind, SocketTally, socket_budget, watch_descriptors
from server.security.tokens import Right, TokenTable

log = logging.getLogger(__name__)


class Need(enum.Enum):
    NOTHING = "nothing"
    ANY_TOKEN = "any token"


Requirement = Right | Need

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
RULES: tuple[tuple[str, Right], ...] = (  # path prefix (whole segments) -> right
    ("/api/v3/stream", Right.PUBLISH),
    ("/api/v3/webrtc", Right.PUBLISH),
    ("/api/v3/streams", Right.SUBSCRIBE),
    ("/api/v3/analysis", Right.ANALYSE),
    ("/api/v3/upload", Right.ANALYSE),
)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def requirement(path: str) -> Requirement:
    """What a request for ``path`` must present."""
    if path in PUBLIC_PATHS:
        return Need.NOTHING
    for prefix, right in RULES:
        if _under(path, prefix):
            return right
    if _under(path, "/api") or path == "/metrics":
        return Need.ANY_TOKEN
    return Need.NOTHING


def presented_secret(request: web.Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer TOKEN``, else the ``token`` query parameter."""
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return request.query.get("token") or None


def is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


@dataclass
class AccessControl:
    tokens: TokenTable
    allowed_origins: frozenset[str]
    limiter: RateLimiter
    sockets: SocketTally

    @classmethod
    def from_config(cls, config: Config) -> AccessControl:
        return cls(TokenTable.parse(config.tokens), parse_allowed(config.allowed_origins),
                   RateLimiter(config.rate_limit_per_s, config.rate_limit_burst),
                   SocketTally(config.max_streams_per_client, socket_budget(config.max_websockets)))


ACCESS = web.AppKey("access", AccessControl)


def _refuse(request: web.Request, status: int, code: str, message: str,
            headers: dict[str, str] | None = None) -> web.Response:
    request.app[METRICS].refused.labels(reason=code).inc()
    return json_error(status, code, message, headers)


CHECKED = web.RequestKey("access_checked", bool)  # set once a request passed (or failed) the checks


def check(request: web.Request) -> web.Response | None:
    """Run the access checks on ``request`` (once: a second call passes): the refusal, or ``None``."""
    if request.get(CHECKED):
        return None
    request[CHECKED] = True
    access = request.app[ACCESS]
    path = request.path
    if access.limiter.enabled and _under(path, "/api"):
        wait_s = access.limiter.check(request.remote or "", time.monotonic())
        if wait_s > 0:
            return _refuse(request, 429, "rate_limited",
                           f"more than {access.limiter.rate_per_s:g} requests per second (bursts of "
                           f"{access.limiter.burst:g}) from this address; retry in {wait_s:.2f} s",
                           {"Retry-After": retry_after_header(wait_s)})
    websocket = is_websocket(request)
    origin = request.headers.get(hdrs.ORIGIN)
    if needs_origin_check(request.method, websocket) and not origin_allowed(
            origin, request.headers.get(hdrs.HOST), request.scheme, access.allowed_origins):
        what = "WebSocket connections" if websocket else f"{request.method} requests"
        return _refuse(request, 403, "origin_not_allowed",
                       f"{what} from origin {clip(origin or '')!r} are not allowed (see the allowed_origins "
                       "option)")
    need = requirement(path)
    if need is not Need.NOTHING and access.tokens.enabled:
        secret = presented_secret(request)
        if secret is None:
            return _refuse(request, 401, "unauthorized", "this server needs a token: send 'Authorization: "
                           "Bearer TOKEN' or the query parameter 'token'", {"WWW-Authenticate": "Bearer"})
        token = access.tokens.find(secret)
        if token is None:
            return _refuse(request, 401, "unauthorized", "unknown token", {"WWW-Authenticate": "Bearer"})
        if isinstance(need, Right) and need not in token.rights:
            return _refuse(request, 403, "forbidden", f"token {token.name!r} lacks the right "
                           f"{need.value!r} that {path} needs")
    return None


def socket_kind(request: web.Request) -> SocketKind | None:
    """What a WebSocket handshake opens, for :class:`SocketTally`; ``None`` for anything else."""
    if not is_websocket(request):
        return None
    path = request.path
    if path == "/api/v3/stream":
        return SocketKind.PUBLISHER
    if path == "/api/v3/upload":
        return SocketKind.UPLOAD
    if path.startswith("/api/v3/streams/") and path.endswith("/events"):
        return SocketKind.SUBSCRIBER
    return None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    refusal = check(request)
    if refusal is not None:
        return refusal
    kind = socket_kind(request)
    if kind is None:
        return await handler(request)
    sockets, client = request.app[ACCESS].sockets, request.remote or ""
    full = sockets.admit(kind, client)
    if full is not None:
        headers = {"Retry-After": "5"} if full.status == 503 else None
        return _refuse(request, full.status, full.code, full.message, headers)
    try:
        return await handler(request)  # a WebSocket's handler returns once the socket has closed
    finally:
        sockets.release(kind, client)


async def _descriptors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watch the open descriptors while the app runs (:func:`watch_descriptors`)."""
    watcher = asyncio.create_task(watch_descriptors())
    yield
    watcher.cancel()
    await asyncio.wait((watcher,))


async def _warn_on_startup(app: web.Application) -> None:
    warn_if_exposed(app[CONFIG].host, app[ACCESS].tokens.enabled)


def setup(app: web.Application) -> None:
    """Install the access middleware (after the JSON-error one); a malformed ``tokens`` fails here."""
    app[ACCESS] = AccessControl.from_config(app[CONFIG])
    app.middlewares.append(access_middleware)
    app.on_startup.append(_warn_on_startup)
    app.cleanup_ctx.append(_descriptors_ctx)
