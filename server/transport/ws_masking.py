"""Client frames must be masked (RFC 6455 §5.1): a server closes the connection on an unmasked one.

aiohttp's frame reader unmasks a masked frame and takes an unmasked one as it is. :class:`MaskedFramesOnly`
sits in front of it on a server socket: it follows the frame boundaries in the raw bytes (header, extended
length, mask key, payload) and, at the first frame whose MASK bit is clear, stops feeding the reader and
fails its queue with a protocol error, so the socket's ``receive()`` ends it with close 1002.
"""

from __future__ import annotations

import enum
from typing import Any

from aiohttp import WSCloseCode
from aiohttp.http_websocket import WebSocketError

UNMASKED_MESSAGE = "a client frame was not masked (RFC 6455 §5.1)"


class _Part(enum.Enum):
    HEADER = "header"  # the two first bytes
    LENGTH = "length"  # 0, 2 or 8 bytes of extended payload length
    KEY = "key"  # the 4-byte masking key
    PAYLOAD = "payload"


class FrameBoundaries:
    """Follows frame boundaries through a byte stream; ``unmasked`` once a frame without a mask was seen."""

    def __init__(self) -> None:
        self._part = _Part.HEADER
        self._pending = bytearray()  # bytes of a header or length field split across reads
        self._length_bytes = 0
        self._payload_left = 0
        self.unmasked = False

    @property
    def between_frames(self) -> bool:
        """Whether the bytes fed so far end where a frame ends."""
        return self._part is _Part.HEADER and not self._pending

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        at, end = 0, len(data)
        if self._part is _Part.PAYLOAD:  # the rest of a payload cut by the previous read
            at = min(self._payload_left, end)
            self._payload_left -= at
            if self._payload_left:
                return
            self._part = _Part.HEADER
        if self._part is _Part.HEADER and not self._pending:
            at = self._whole_frames(data, at)  # the usual read: whole frames, often all of it
            if at == end:
                return
        view = memoryview(data)
        while at < end and not self.unmasked:  # a header cut by a read, byte field by byte field
            if self._part is _Part.PAYLOAD:
                step = min(self._payload_left, end - at)
                self._payload_left -= step
                at += step
                if self._payload_left == 0:
                    self._part = _Part.HEADER
                continue
            need = {_Part.HEADER: 2, _Part.LENGTH: self._length_bytes, _Part.KEY: 4}[self._part]
            step = min(need - len(self._pending), end - at)
            self._pending += view[at:at + step]
            at += step
            if len(self._pending) == need:
                field, self._pending = bytes(self._pending), bytearray()
                self._advance(field)

    def _whole_frames(self, view: bytes | bytearray | memoryview, at: int) -> int:
        """Skip the frames whose header lies whole in ``view`` from ``at`` on (the usual read); where the
        rest begins: the end, also when the last frame's payload goes on in the next read (then followed as
        :attr:`_Part.PAYLOAD`), or the start of a header cut by the end of ``view``."""
        end = len(view)
        while end - at >= 2:
            second = view[at + 1]
            if not second & 0x80:
                self.unmasked = True
                return end
            flag = second & 0x7F
            if flag < 126:
                header, length = 6, flag
            elif flag == 126:
                if end - at < 4:
                    break
                header, length = 8, view[at + 2] << 8 | view[at + 3]
            else:
                if end - at < 10:
                    break
                header, length = 14, int.from_bytes(view[at + 2:at + 10], "big")
            if end - at < header:
                break
            if end - at < header + length:
                self._payload_left = header + length - (end - at)
                self._part = _Part.PAYLOAD
                return end
            at += header + length
        return at

    def _advance(self, field: bytes) -> None:
        if self._part is _Part.HEADER:
            if not field[1] & 0x80:
                self.unmasked = True
                return
            flag = field[1] & 0x7F
            self._payload_left = flag if flag < 126 else 0
            self._length_bytes = {126: 2, 127: 8}.get(flag, 0)
            self._part = _Part.LENGTH if self._length_bytes else _Part.KEY
        elif self._part is _Part.LENGTH:
            self._payload_left = int.from_bytes(field, "big")
            self._part = _Part.KEY
        else:
            self._part = _Part.PAYLOAD if self._payload_left else _Part.HEADER


class MaskedFramesOnly:
    """A frame reader (aiohttp's parser interface) refusing unmasked frames; the rest goes to ``inner``."""

    def __init__(self, inner: Any, queue: Any, seen: bytes = b"") -> None:
        self._inner = inner
        self._queue = queue
        self._frames = FrameBoundaries()
        self._frames.feed(seen)  # bytes already handed to ``inner`` (those that came with the handshake)
        self._refused = False
        self._refuse_if_unmasked()

    def _refuse_if_unmasked(self) -> bool:
        if self._frames.unmasked and not self._refused:
            self._refused = True
            self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED_MESSAGE))
        return self._refused

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        frames = self._frames
        frames.feed(data)
        if frames.unmasked:
            self._refuse_if_unmasked()
            return True, b""  # what came before the unmasked frame is dropped with the connection
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def require_masked_frames(protocol: Any, queue: Any, seen: bytes) -> None:
    """Put :class:`MaskedFramesOnly` in front of the frame reader ``protocol`` (aiohttp's request handler)
    was just given; ``seen`` is what that reader was fed at once (the handshake's tail)."""
    protocol._payload_parser = MaskedFramesOnly(protocol._payload_parser, queue, seen)
