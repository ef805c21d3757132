"""Shutdown of the WebSockets no stream owns: file uploads are told ``shutdown`` and closed with 1001.

Live-stream publishers and their subscribers are ended by the stream service (``ws_stream``). An upload
socket would otherwise keep its handler, and the server's exit, waiting for a client or a long job: at
shutdown it gets ``{"type": "error", "code": "shutdown"}`` and close 1001. A job whose upload had ended
stays queued and runs after the next start; one still uploading fails with ``upload_incomplete``.
"""

from __future__ import annotations

import contextlib
import weakref

from aiohttp import web

from server.protocol.codec import Codec, send
from server.protocol.errors import CloseCode, ProtocolError
from server.transport.stream_socket import StreamSocket

UPLOAD_PATH = "/api/v3/upload"


class OpenSockets:
    """Prepared server WebSockets by request path (weakly held: a finished socket just disappears)."""

    def __init__(self) -> None:
        self._paths: weakref.WeakKeyDictionary[web.WebSocketResponse, str] = weakref.WeakKeyDictionary()

    def add(self, ws: web.WebSocketResponse, path: str) -> None:
        self._paths[ws] = path

    def at(self, path: str) -> list[web.WebSocketResponse]:
        return [ws for ws, where in list(self._paths.items()) if where == path and not ws.closed]


OPEN_SOCKETS = web.AppKey("open_sockets", OpenSockets)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse):
        request.app[OPEN_SOCKETS].add(response, request.path)


async def _on_shutdown(app: web.Application) -> None:
    error = ProtocolError("shutdown", "the server is shutting down; a finished upload's task runs after it "
                          "restarts (GET /api/v3/analysis/{task_id})", CloseCode.GOING_AWAY)
    for ws in app[OPEN_SOCKETS].at(UPLOAD_PATH):
        codec = ws.codec if isinstance(ws, StreamSocket) else Codec.JSON
        with contextlib.suppress(ConnectionError, RuntimeError):
            await send(ws, codec, error.to_message())
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=CloseCode.GOING_AWAY, message=b"shutdown")


def setup(app: web.Application) -> None:
    app[OPEN_SOCKETS] = OpenSockets()
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_on_shutdown)
