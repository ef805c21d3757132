"""Connecting to Redis: one client (a connection pool) per process, checked at start-up."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from server.exceptions import TransientError

CONNECT_TIMEOUT_S = 5.0  # to open a TCP connection to Redis
SOCKET_TIMEOUT_S = 10.0  # longest wait for a reply (blocking reads ask for at most 1 s)
RETRIES = 6  # a command meeting a broken connection is sent again this often, backing off up to 1 s
START_TIMEOUT_S = 15.0  # how long start-up waits for Redis to answer before giving up

Redis = aioredis.Redis


class RedisUnavailable(TransientError, RuntimeError):
    """Redis did not answer at start-up (the URL is wrong, or the server is down)."""


def instance_id() -> str:
    """A name for this process unique across machines and restarts (host, pid, random)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


async def connect(url: str, **options: Any) -> Redis:
    """A client for ``url`` (``redis://host:port/db``, ``rediss://`` for TLS), once Redis answers PING.

    A command that meets a broken connection (Redis restarted) reconnects and is sent again; so a
    command may run twice, which every script here tolerates (at-least-once, idempotent by task id).

    Raises :class:`RedisUnavailable` naming the URL (password hidden) when it is malformed or Redis does
    not answer within :data:`START_TIMEOUT_S`.
    """
    try:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES)
        client = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                   socket_timeout=SOCKET_TIMEOUT_S, socket_keepalive=True, retry=retry,
                                   **options)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redacted(url)!r}: {exc}") from None
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        try:
            await client.ping()
            return client
        except (RedisError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                await client.aclose()
                raise RedisUnavailable(f"Redis at {redacted(url)} does not answer: {exc}") from None
            await asyncio.sleep(0.5)
