"""Framing of WebSocket messages in the two codecs, ``json`` (default) and ``msgpack``.

JSON codec: control messages and events are text frames holding one JSON object; audio is a binary frame
of raw PCM. Msgpack codec: every message, both ways, is a binary frame holding one msgpack map; audio is
``{"type": "audio", "data": <bytes>}``. :func:`decode_frame` turns any frame into either a control mapping
or the audio payload, exactly once; typed parsing of the mapping happens in the endpoint's message module.

:func:`parse_json` is the one place where a client's JSON text becomes a value, for the WebSockets and the
HTTP bodies alike: a value nested deeper than :data:`MAX_NESTING_DEPTH` is refused (``too_deep``), in JSON
and in msgpack, before anything recurses into it.
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

MAX_NESTING_DEPTH = 32  # arrays and objects inside one another; the deepest real message has 3
# The values JSON and msgpack give besides maps and arrays: no depth. They, dicts, lists and tuples are told
# by their type, not by an isinstance check against Mapping, an abstract class whose check of a type it has
# not seen walks every registered subclass of it and caches the answer in each (a first stream's start
# message left such caches in the event loop: 162 KiB on a bare import of the server, tracemalloc;
# bench/README.md, "Memory per stream").
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
ERROR_QUOTE_CHARS = 200  # at most this much of a client's text is repeated in an error message


def clip(text: str, limit: int = ERROR_QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with ``…``), for quoting a client's input in an error."""
    return text if len(text) <= limit else text[:limit] + "…"


def _too_deep() -> ProtocolError:
    return ProtocolError("too_deep", f"the message nests arrays or objects more than {MAX_NESTING_DEPTH} "
                         "levels deep", CloseCode.INVALID_PAYLOAD)


def nesting_depth(value: object, limit: int = MAX_NESTING_DEPTH) -> int:
    """Levels of arrays and maps in ``value`` (a scalar is 0), counted without recursion; stops past
    ``limit``."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        children: Any
        if kind is list or kind is tuple:
            children = item
        elif kind is dict or isinstance(item, Mapping):
            children = list(item.keys()) + list(item.values())  # type: ignore[attr-defined]
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        pending.extend((child, depth) for child in children)
    return deepest


def check_depth(value: object) -> object:
    """``value`` itself, or ``too_deep`` when it nests past :data:`MAX_NESTING_DEPTH` levels."""
    if nesting_depth(value) > MAX_NESTING_DEPTH:
        raise _too_deep()
    return value


def parse_json(text: str | bytes | bytearray) -> object:
    """A client's JSON text as a value: ``bad_json`` when it is not JSON, ``too_deep`` when it nests past
    :data:`MAX_NESTING_DEPTH` levels (fatal errors with close code 1007; HTTP endpoints answer 400)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise ProtocolError("bad_json", f"invalid JSON: {clip(str(exc))}",
                            CloseCode.INVALID_PAYLOAD) from None
    return check_depth(value)


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
            return _control(parse_json(data))
    else:
        if kind is WSMsgType.TEXT:
            raise ProtocolError("bad_frame", "with codec=msgpack every message is a binary frame",
                                CloseCode.UNSUPPORTED_DATA)
        if kind is WSMsgType.BINARY:
            try:
                obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except msgpack.StackError:  # nested past msgpack's own limit; it says nothing itself
                raise _too_deep() from None
            except Exception as exc:  # msgpack raises several unrelated types on bad input
                reason = clip(str(exc)) or type(exc).__name__
                raise ProtocolError("bad_msgpack", f"invalid msgpack: {reason}",
                                    CloseCode.INVALID_PAYLOAD) from None
            control = _control(obj)
            if control.type == "audio":  # its extra fields are never read: only a control message is walked
                payload = control.body.get("data")
                if not isinstance(payload, bytes | bytearray):
                    raise ProtocolError("bad_audio", "an audio message needs binary 'data'",
                                        CloseCode.INVALID_PAYLOAD)
                return Audio(bytes(payload))
            check_depth(control.body)
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
