"""Structured log lines: the message, then ``key=value`` for the context a record carries.

Code attaches context with ``extra`` (``log.info("...", extra={"stream_id": ...})``); the formatter appends
the known context fields present on the record, so lines about one stream or task can be found with grep
(``stream_id=...``, ``task_id=...``). Access tokens in URLs are redacted (:mod:`redact`).
"""

from __future__ import annotations

import logging

from server.observability.redact import redact_tokens

CONTEXT_FIELDS = ("stream_id", "task_id", "transport", "client", "token")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class ContextFormatter(logging.Formatter):
    """:class:`logging.Formatter` that appends ``key=value`` for each context field on the record."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name}={_quote(getattr(record, name))}"
                   for name in CONTEXT_FIELDS if hasattr(record, name)]
        if context:
            head, newline, trace = line.partition("\n")  # keep a traceback below the line
            line = head + " " + " ".join(context) + newline + trace
        return redact_tokens(line)  # no access token in any line, traceback included


def configure(level: str) -> None:
    """Log to stderr at ``level`` with context fields (the server's root logging set-up)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ContextFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
