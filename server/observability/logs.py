"""Structured log lines: the message, then ``key=value`` for the context a record carries.

Code attaches context with ``extra`` (``log.info("...", extra={"stream_id": ...})``); the formatter appends
the known context fields present on the record, so lines about one stream or task can be found with grep
(``stream_id=...``, ``task_id=...``). Access tokens in URLs are redacted (:mod:`redact`).

What a client sends can reach a message (a path, a header); it can never start a line of its own: control
characters in the message and the context are written as escapes (``\\n``, ``\\x00``), and a traceback line
that does not start the way a traceback's own lines do (with a space or a letter) is indented.

A client's fault is not the server's: :class:`ClientFaultFilter` turns aiohttp's ``ERROR`` with a traceback
for a malformed request, or a client gone in the middle of its body, into one ``WARNING`` line, at most
``burst`` of them per ``window_s`` (then one line saying how many were left out).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from server.observability.redact import redact_tokens

CONTEXT_FIELDS = ("stream_id", "task_id", "transport", "client", "token")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TRACEBACK_LINE = re.compile(r"^(?:[ \t]|[A-Za-z_]|$)")  # indented, an exception's name, or empty
AIOHTTP_SERVER_LOGGER = "aiohttp.server"
CLIENT_FAULTS: tuple[type[BaseException], ...] = (HttpProcessingError, ConnectionError)
MAX_REASON_CHARS = 200


def escape(text: str) -> str:
    """``text`` with every control character (newlines included) written as a Python escape."""
    return CONTROL_CHARS.sub(lambda match: repr(match.group())[1:-1], text)


def _quote(value: object) -> str:
    text = escape(str(value))
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _contain(trace: str) -> str:
    """A traceback's lines, each one that could pass for a record of its own indented."""
    return "\n".join(line if TRACEBACK_LINE.match(line) else "  " + line for line in trace.split("\n"))


class ContextFormatter(logging.Formatter):
    """:class:`logging.Formatter` that appends ``key=value`` for each context field on the record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        head, newline, trace = line.partition("\n")  # keep a traceback below the line
        context = [f"{name}={_quote(getattr(record, name))}"
                   for name in CONTEXT_FIELDS if hasattr(record, name)]
        if context:
            head = head + " " + " ".join(context)
        line = head + newline + _contain(trace)
        return redact_tokens(line)  # no access token in any line, traceback included


def is_client_fault(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the client's doing: a malformed request, or the connection lost under it."""
    return isinstance(exc, CLIENT_FAULTS)


class ClientFaultFilter(logging.Filter):
    """Rewrites aiohttp's records about a client's fault into one rate-limited ``WARNING`` line.

    Attach it to the ``aiohttp.server`` logger. Other records pass unchanged.
    """

    def __init__(self, burst: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._window_start_s = -float("inf")
        self._logged = 0
        self.suppressed = 0  # left out in the current window

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not is_client_fault(exc):
            return True
        now_s = self._clock()
        left_out = 0
        if now_s - self._window_start_s >= self.window_s:
            left_out, self.suppressed = self.suppressed, 0
            self._window_start_s, self._logged = now_s, 0
        if self._logged >= self.burst:
            self.suppressed += 1
            return False
        self._logged += 1
        assert exc is not None
        what = record.getMessage()
        reason = " ".join(str(exc).split())  # aiohttp's parser errors span several lines
        reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "…"
        record.msg = "client fault: %s: %s (%s)%s"
        record.args = (type(exc).__name__, reason, what,
                       f"; {left_out} more in the previous {self.window_s:g} s left out" if left_out else "")
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install_client_fault_filter(burst: int = 10, window_s: float = 60.0) -> Callable[[], None]:
    """Attach a :class:`ClientFaultFilter` to aiohttp's server logger; returns what removes it."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    fault_filter = ClientFaultFilter(burst, window_s)
    logger.addFilter(fault_filter)
    return lambda: logger.removeFilter(fault_filter)


def configure(level: str) -> None:
    """Log to stderr at ``level`` with context fields (the server's root logging set-up)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ContextFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
