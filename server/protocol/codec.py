"""Framing of WebSocket messages in the two codecs, ``json`` (default) and ``msgpack``.

JSON codec: control messages and events are text frames holding one JSON object; audio is a binary frame
of raw PCM. Msgpack codec: every message, both ways, is a binary frame holding one msgpack map; audio is
``{"type": "audio", "data": <bytes>}``. :func:`decode_frame` turns any frame into either a control mapping
or the audio payload, exactly once; typed parsing of the mapping happens in the endpoint's message module.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from server.protocol.errors import CloseCode, ProtocolError


class Codec(enum.Enum):
    JSON = "json"
    MSGPACK = "msgpack"

    @classmethod
    def from_query(cls, value: str | None) -> Codec:
        """The codec named by the ``codec`` query parameter (absent means JSON)."""
        if value is None or value == "json":
            return cls.JSON
        if value == "msgpack":
            return cls.MSGPACK
        raise ProtocolError("bad_codec", f"unknown codec {value!r}; use 'json' or 'msgpack'", None)


@dataclass(frozen=True, slots=True)
class Control:
    """A decoded control message: a mapping with a string ``type``."""

    type: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Audio:
    """A decoded audio payload (raw interleaved little-endian PCM)."""

    data: bytes


Frame = Control | Audio


def _control(obj: object) -> Control:
    if not isinstance(obj, Mapping):
        raise ProtocolError("bad_message", "a control message must be an object", CloseCode.INVALID_PAYLOAD)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "a control message needs a string 'type'",
                            CloseCode.INVALID_PAYLOAD)
    return Control(kind, obj)


def decode_frame(codec: Codec, kind: WSMsgType, data: str | bytes) -> Frame:
    """Decode one TEXT or BINARY WebSocket message. Raises :class:`ProtocolError` on anything else."""
    if codec is Codec.JSON:
        if kind is WSMsgType.BINARY:
            return Audio(data if isinstance(data, bytes) else data.encode())
        if kind is WSMsgType.TEXT:
            try:
                obj = json.loads(data)
            except ValueError as exc:
                raise ProtocolError("bad_json", f"invalid JSON: {exc}", CloseCode.INVALID_PAYLOAD) from None
            return _control(obj)
    else:
        if kind is WSMsgType.TEXT:
            raise ProtocolError("bad_frame", "with codec=msgpack every message is a binary frame",
                                CloseCode.UNSUPPORTED_DATA)
        if kind is WSMsgType.BINARY:
            try:
                obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except Exception as exc:  # msgpack raises several unrelated types on bad input
                raise ProtocolError("bad_msgpack", f"invalid msgpack: {exc}",
                                    CloseCode.INVALID_PAYLOAD) from None
            control = _control(obj)
            if control.type == "audio":
                payload = control.body.get("data")
                if not isinstance(payload, bytes | bytearray):
                    raise ProtocolError("bad_audio", "an audio message needs binary 'data'",
                                        CloseCode.INVALID_PAYLOAD)
                return Audio(bytes(payload))
            return control
    raise ProtocolError("bad_frame", f"unexpected WebSocket message type {kind.name}",
                        CloseCode.UNSUPPORTED_DATA)


def encode(codec: Codec, message: Mapping[str, Any]) -> str | bytes:
    """Encode one outgoing message: a JSON string (text frame) or msgpack bytes (binary frame)."""
    if codec is Codec.JSON:
        return json.dumps(message, separators=(",", ":"), allow_nan=False)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


async def send(ws: web.WebSocketResponse, codec: Codec, message: Mapping[str, Any]) -> None:
    """Send one message on a server-side WebSocket in its codec."""
    payload = encode(codec, message)
    if isinstance(payload, str):
        await ws.send_str(payload)
    else:
        await ws.send_bytes(payload)
