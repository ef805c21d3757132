"""One WebSocket to the server in either codec, with messages as dicts and audio as raw PCM bytes.

JSON codec: control messages and events are text frames, audio binary frames. Msgpack codec
(``?codec=msgpack``): every message is a binary frame holding one msgpack map, audio as
``{"type": "audio", "data": <bytes>}`` (docs/protocol.md, "Live streams").
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgpack
import numpy as np

from server.client.auth import auth_headers
from server.client.errors import ClientError
from server.protocol.encoding import Encoding

CODECS = ("json", "msgpack")
ACCESS_STATUSES = (401, 403)  # refusals of the access checks (docs/protocol.md, "Access tokens")
ACCESS_PROBE_TIMEOUT_S = 10.0
Message = dict[str, Any]


def to_pcm(samples: np.ndarray | bytes, encoding: Encoding) -> bytes:
    """Interleaved little-endian PCM of ``samples`` (shape ``(n,)`` or ``(n, channels)``).

    Floats are taken as [-1, 1]; int16 as full scale 32768. Bytes pass through unchanged.
    """
    if isinstance(samples, bytes | bytearray | memoryview):
        return bytes(samples)
    array = np.asarray(samples)
    if encoding is Encoding.PCM_F32LE:
        if array.dtype == np.int16:
            array = array.astype(np.float32) / np.float32(32768.0)
        return np.ascontiguousarray(array, dtype="<f4").tobytes()
    if array.dtype != np.int16:
        array = np.round(np.clip(array, -1.0, 32767.0 / 32768.0) * 32768.0)
    return np.ascontiguousarray(array, dtype="<i2").tobytes()


def ws_url(base_url: str, path: str, codec: str = "json") -> str:
    """The URL of a WebSocket endpoint under ``base_url`` (``http``/``https`` become ``ws``/``wss``)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    url = base_url.rstrip("/") + path
    if url.startswith("http://") or url.startswith("https://"):
        url = "ws" + url[len("http"):]
    return url if codec == "json" else f"{url}?codec={codec}"


def http_url(base_url: str, path: str) -> str:
    """The plain-HTTP URL of ``path`` under ``base_url`` (``ws``/``wss`` become ``http``/``https``)."""
    url = base_url.rstrip("/") + path
    if url.startswith("ws://") or url.startswith("wss://"):
        url = "http" + url[len("ws"):]
    return url


async def _access_refusal(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                          status: int) -> ClientError:
    """The error for a handshake refused with 401 or 403, with the server's own code and message.

    A refused handshake carries no readable body, so the same path is asked for once more over plain HTTP
    with the same headers: the access checks run before any handler and answer the same way (the browser
    pages do the same). Should that answer differ, the error is built from the status alone.
    """
    with contextlib.suppress(aiohttp.ClientError, OSError, ValueError, TimeoutError):
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=ACCESS_PROBE_TIMEOUT_S)) as response:
            body = await response.json(content_type=None)
            error = body.get("error") if isinstance(body, dict) else None
            if response.status == status and isinstance(error, dict) and isinstance(error.get("code"), str):
                return ClientError(error["code"], str(error.get("message", "")), status=status)
    if status == 401:
        return ClientError("unauthorized", "the server wants a token it knows (HTTP 401)", status=status)
    return ClientError("forbidden", "the server refused access to this endpoint (HTTP 403)", status=status)


class MessageSocket:
    """A client WebSocket speaking the server's framing."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, codec: str) -> None:
        self.ws = ws
        self.codec = codec

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, base_url: str, path: str,
                      codec: str = "json", *, token: str | None = None) -> MessageSocket:
        """Open the socket, presenting ``token`` in the handshake's ``Authorization`` header.

        An HTTP refusal (e.g. 400 for a bad codec, 401/403 for the token) raises :class:`ClientError`.
        """
        headers = auth_headers(token)
        try:
            ws = await session.ws_connect(ws_url(base_url, path, codec), autoping=True, compress=0,
                                          max_msg_size=0, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in ACCESS_STATUSES:
                raise await _access_refusal(session, http_url(base_url, path), headers, exc.status) from None
            raise ClientError(f"http_{exc.status}", f"the server refused the WebSocket: {exc.message}",
                              status=exc.status) from None
        return cls(ws, codec)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.codec == "json":
            await self.ws.send_str(json.dumps(dict(message), separators=(",", ":")))
        else:
            await self.ws.send_bytes(msgpack.packb(dict(message), use_bin_type=True))

    async def send_audio(self, data: bytes) -> None:
        if self.codec == "json":
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_bytes(msgpack.packb({"type": "audio", "data": data}, use_bin_type=True))

    async def receive(self, timeout_s: float | None = None) -> Message | None:
        """The next message from the server, or ``None`` once the socket has closed."""
        while True:
            message = await self.ws.receive(timeout=timeout_s)
            if message.type == aiohttp.WSMsgType.TEXT:
                decoded = json.loads(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                decoded = msgpack.unpackb(message.data, raw=False)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return None
            else:
                continue
            if isinstance(decoded, dict) and isinstance(decoded.get("type"), str):
                return decoded
            raise ClientError("bad_message", f"the server sent a message that is not an object: {decoded!r}")

    async def close(self) -> None:
        await self.ws.close()
