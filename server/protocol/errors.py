"""Protocol errors, WebSocket close codes (RFC 6455 §7.4.1) and the JSON body of an HTTP error, as documented
in docs/protocol.md."""

from __future__ import annotations

import enum

from aiohttp import web

from server.exceptions import TransientError


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY = 1008
    TOO_BIG = 1009
    SERVER_FAULT = 1011
    TRY_AGAIN_LATER = 1013


class ProtocolError(TransientError):
    """A client's message broke the protocol.

    ``code`` is the machine-readable error code sent in ``{"type": "error", "code": ...}``; ``close_code``
    is the WebSocket close code that follows when the error is fatal, or ``None`` when the socket stays open.
    """

    def __init__(self, code: str, message: str, close_code: CloseCode | None = CloseCode.INVALID_PAYLOAD):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    @property
    def fatal(self) -> bool:
        return self.close_code is not None

    def to_message(self) -> dict[str, object]:
        return {"type": "error", "code": self.code, "message": self.message}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An HTTP error answer: ``{"error": {"code": code, "message": message}}`` with ``status``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
