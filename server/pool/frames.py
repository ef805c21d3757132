"""Length-prefixed frames, the wire format of the pipes between the server and a pool worker.

A frame is an 8-byte little-endian payload length, then the payload (one pickle). A call goes to the
worker as two frames: the pickle of ``spans``, the places in the lane's shared arena of the call's
out-of-band buffers, in order (see :mod:`server.pool.arena`; empty when the call's pickle holds them),
then the protocol-5 pickle of ``(function, args)``. Answers come back as pickles of ``(ok, value)``,
where ``value`` is the function's result when ``ok`` is true and the exception it raised otherwise.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<Q")


def frame(payload: bytes) -> bytes:
    """``payload`` with its length header, ready to write."""
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Reassembles frames from a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next piece of the stream; returns the payloads of the frames it completed, in order."""
        buffer = self._buffer
        buffer += data
        payloads: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            payloads.append(bytes(buffer[start + HEADER.size:end]))
            start = end
        if start:
            del buffer[:start]
        return payloads

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
