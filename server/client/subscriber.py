"""Subscribing to a live stream's events: ``GET /api/v3/streams/{stream_id}/events``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from server.client.errors import ClientError
from server.client.wire import Message, MessageSocket

REPLY_TIMEOUT_S = 30.0


class Subscription:
    """The events of one stream as they happen. Iterate it; it ends after the stream's ``ended`` event."""

    def __init__(self, socket: MessageSocket, subscribed: Message) -> None:
        self.socket = socket
        self.stream: dict[str, Any] = dict(subscribed.get("stream", {}))
        self.ended: Message | None = None

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, base_url: str, stream_id: str,
                   codec: str = "json", *, token: str | None = None) -> Subscription:
        """Subscribe (presenting ``token``, if any); an unknown stream, a full one or a refused token
        raises :class:`ClientError`."""
        path = f"/api/v3/streams/{quote(stream_id, safe='')}/events"
        socket = await MessageSocket.connect(session, base_url, path, codec, token=token)
        try:
            first = await socket.receive(REPLY_TIMEOUT_S)
        except BaseException:
            await socket.close()
            raise
        if first is None or first["type"] != "subscribed":
            await socket.close()
            if first is not None and first["type"] == "error":
                raise ClientError(str(first.get("code")), str(first.get("message", "")),
                                  close_code=socket.close_code)
            raise ClientError("closed", f"the connection closed (code {socket.close_code})",
                              close_code=socket.close_code)
        return cls(socket, first)

    async def __aiter__(self) -> AsyncIterator[Message]:
        """Events (onset, status, warning, odf, overflow, ..., then ``ended``) until the socket closes."""
        while (message := await self.socket.receive()) is not None:
            if message["type"] == "ended":
                self.ended = message
            yield message

    async def close(self) -> None:
        await self.socket.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
