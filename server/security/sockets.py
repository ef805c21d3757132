"""Open WebSockets counted per client address and in all, from the handshake to the close.

A publisher socket counts toward its client's ``max_streams_per_client`` from its handshake, not from its
``start``: a socket that never starts holds a connection (a file descriptor, a task) as surely as a stream
does. Upload sockets are held to the same number per client, apart. In all, WebSockets are kept below the
process's open-file limit (less a reserve for files, pipes and plain HTTP), so that running out of
descriptors is a clean 503 at the handshake rather than failed accepts, a dead ``/healthz`` and tracebacks.

Plain HTTP connections can still fill the table; the event loop then refuses new connections (resets them)
without a word, so :func:`watch_descriptors` looks at the count every few seconds and says so in the log.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger(__name__)

FD_RESERVE = 128  # descriptors kept for the pool's pipes and memory, job files, SQLite, plain HTTP
MIN_SOCKETS = 16
WARNING_INTERVAL_S = 60.0  # at most one warning this often about sockets refused for lack of descriptors
DESCRIPTOR_CHECK_S = 2.0  # how often the open descriptors are counted
DESCRIPTORS_DIR = "/proc/self/fd"


class SocketKind(enum.Enum):
    PUBLISHER = "publisher"  # /api/v3/stream
    UPLOAD = "upload"  # /api/v3/upload
    SUBSCRIBER = "subscriber"  # /api/v3/streams/{id}/events: counted in all only


PER_CLIENT_KINDS = frozenset({SocketKind.PUBLISHER, SocketKind.UPLOAD})


def socket_budget(configured: int) -> int:
    """WebSockets allowed open at once: ``configured``, or (0) the open-file soft limit less the reserve."""
    if configured > 0:
        return configured
    return max(MIN_SOCKETS, open_file_limit() - FD_RESERVE)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    message: str


class SocketTally:
    """Counts of open WebSockets; :meth:`admit` one at its handshake, :meth:`release` it when it closes."""

    def __init__(self, per_client: int, in_all: int) -> None:
        self.per_client = per_client
        self.in_all = in_all
        self._open: Counter[tuple[SocketKind, str]] = Counter()
        self.total = 0
        self._warned_s = -WARNING_INTERVAL_S
        self._refused_since_warning = 0

    def count(self, kind: SocketKind, client: str) -> int:
        return self._open[(kind, client)]

    def admit(self, kind: SocketKind, client: str) -> Refusal | None:
        """Count one more socket of ``kind`` from ``client``, or say why not (nothing is counted then)."""
        if self.total >= self.in_all:
            self._warn_full()
            return Refusal(503, "server_full", f"{self.in_all} WebSockets are open, the most this server "
                           "keeps within its open-file limit; retry later")
        if kind in PER_CLIENT_KINDS and self._open[(kind, client)] >= self.per_client:
            code = "client_stream_limit" if kind is SocketKind.PUBLISHER else "client_upload_limit"
            return Refusal(429, code, f"this client already has {self.per_client} {kind.value} sockets open "
                           "(started or not), the most one client may")
        self._open[(kind, client)] += 1
        self.total += 1
        return None

    def release(self, kind: SocketKind, client: str) -> None:
        key = (kind, client)
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
        self.total -= 1

    def _warn_full(self) -> None:
        self._refused_since_warning += 1
        now_s = time.monotonic()
        if now_s - self._warned_s >= WARNING_INTERVAL_S:
            log.warning("refusing WebSockets: %d are open, the most within the open-file limit (%d refused "
                        "since the last warning); raise the limit (ulimit -n) or set max_websockets",
                        self.total, self._refused_since_warning)
            self._warned_s = now_s
            self._refused_since_warning = 0


def open_file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def open_descriptors() -> int | None:
    """Descriptors this process has open (``None`` where ``/proc`` cannot tell)."""
    try:
        return len(os.listdir(DESCRIPTORS_DIR))
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # listing takes a descriptor: none is left
            return open_file_limit()
        return None


async def watch_descriptors(interval_s: float = DESCRIPTOR_CHECK_S) -> None:
    """Warn (at most once a minute) while fewer than half the reserve of descriptors is left: new
    connections are then being refused by the event loop, or soon will be."""
    warned_s = -WARNING_INTERVAL_S
    while True:
        used, limit = open_descriptors(), open_file_limit()
        now_s = time.monotonic()
        if used is not None and used >= limit - FD_RESERVE // 2 and now_s - warned_s >= WARNING_INTERVAL_S:
            log.warning("%d of %d open files in use: new connections are refused once none is left; raise "
                        "the limit (ulimit -n) or find what holds them", used, limit)
            warned_s = now_s
        await asyncio.sleep(interval_s)
