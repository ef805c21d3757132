"""The client's one error type: what the server refused, or a connection that ended early."""

from __future__ import annotations

from server.exceptions import TransientError


class ClientError(TransientError):
    """The server answered with an error, or the connection ended before the expected reply.

    ``code`` is the server's machine-readable error code (``"closed"`` when the socket closed without one,
    ``"http_<status>"`` for an HTTP answer without a JSON error); ``status`` is the HTTP status and
    ``close_code`` the WebSocket close code, when there was one.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code
