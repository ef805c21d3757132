"""Access tokens never reach a log: the ``token`` query parameter is replaced by ``token=REDACTED``.

Browsers cannot put a header on a WebSocket, so they send their token as ``?token=...``; it would then
appear in aiohttp's access log (the request line, and the ``Referer`` of a page opened with
``?token=``), and in any other line that quotes a URL. :func:`redact_tokens` rewrites such text; the
access logger and the log formatter apply it to every line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

REDACTED = "REDACTED"
SECRET_PARAMETERS = frozenset({"token"})
# One name=value pair of a query string: after '?', '&' or ';', up to the next separator, space or quote.
QUERY_PAIR_RE = re.compile(r"(?<=[?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")


def _redact_pair(match: re.Match[str]) -> str:
    name = match.group(1)
    if unquote_plus(name).strip().lower() in SECRET_PARAMETERS:  # also a percent-encoded name
        return f"{name}={REDACTED}"
    return match.group(0)


def redact_tokens(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced by ``REDACTED``."""
    if "=" not in text:
        return text
    return QUERY_PAIR_RE.sub(_redact_pair, text)


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access logger, with tokens redacted from every field (request line, headers) it logs,
    and so from the record's ``extra`` fields too."""

    def _format_line(self, request: BaseRequest, response: StreamResponse,
                     time: float) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [(key, redact_tokens(value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]
