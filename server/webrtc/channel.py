"""The ``events`` data channel: JSON events out, ``configure`` and ``stop`` in.

Outgoing events are the live-stream messages of ``/api/v3/stream``, as JSON text. Events emitted before
the client's channel has opened wait (a bounded number); a channel that does not drain its send buffer
is reported as a slow reader. Incoming messages are parsed once, here, into the live-stream message
types; every mistake in them is answered with a non-fatal ``error`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

from aiohttp import WSMsgType
from aiortc import RTCDataChannel

from server.protocol.codec import Codec, Control, decode_frame
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import ClientMessage, Event, Start, parse_client_message

EVENTS_LABEL = "events"
PENDING_LIMIT = 1024  # events kept for a channel that has not opened yet (the oldest go first)
MAX_BUFFERED_BYTES = 1 << 20  # unsent bytes on an open channel before its reader counts as too slow
MAX_MESSAGE_BYTES = 64 * 1024  # the largest control message accepted on the channel



def parse_channel_message(data: str | bytes) -> ClientMessage:
    """The typed form of a message received on the ``events`` channel.

    Raises a non-fatal :class:`ProtocolError` (``close_code`` ``None``) for anything but a JSON
    ``configure`` or ``stop`` object.
    """
    if isinstance(data, bytes):
        raise ProtocolError("bad_frame", "the events channel carries JSON text messages; audio goes on the "
                            "media track", None)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message_too_big", f"a message of {len(data)} characters; the events channel "
                            f"accepts at most {MAX_MESSAGE_BYTES}", None)
    try:
        frame = decode_frame(Codec.JSON, WSMsgType.TEXT, data)
        if not isinstance(frame, Control):  # a text frame always decodes to a control message
            raise ProtocolError("bad_frame", "not a control message", None)
        message = parse_client_message(frame)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, None) from None
    if isinstance(message, Start):
        raise ProtocolError("already_started", "the stream started with the offer; send configure or stop",
                            None)
    return message


def encode_event(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"), allow_nan=False)


class EventChannel:
    """Outgoing side of one peer's ``events`` channel (which may not have opened yet)."""

    def __init__(self, pending_limit: int = PENDING_LIMIT,
                 max_buffered_bytes: int = MAX_BUFFERED_BYTES) -> None:
        self.pending_limit = pending_limit
        self.max_buffered_bytes = max_buffered_bytes
        self.channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque()
        self.dropped = 0  # events dropped while waiting for the channel to open
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def is_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    def attach(self, channel: RTCDataChannel) -> None:
        """Use ``channel`` from now on; events waiting so far go out once it is open."""
        self.channel = channel
        channel.on("open", self._flush_pending)
        channel.on("close", self._on_close)
        if channel.readyState == "open":
            self._flush_pending()
        elif channel.readyState == "closed":
            self._on_close()

    def send(self, event: Event, force: bool = False) -> bool:
        """Send (or keep for later) one event; ``False`` when an open channel's buffer is over its limit."""
        channel = self.channel
        if channel is None or channel.readyState == "connecting":
            self._pending.append(encode_event(event))
            if len(self._pending) > self.pending_limit:
                self._pending.popleft()
                self.dropped += 1
            return True
        if channel.readyState != "open":
            return True  # closing or closed: nobody will read it
        if channel.bufferedAmount > self.max_buffered_bytes and not force:
            return False
        channel.send(encode_event(event))
        return True

    def _flush_pending(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while self._pending:
            channel.send(self._pending.popleft())

    def _on_close(self) -> None:
        self._pending.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    async def close(self, timeout_s: float) -> None:
        """Close the channel once everything sent so far was delivered (or after ``timeout_s``).

        The channel reaches ``closed`` when the peer has acknowledged the stream reset, which it does only
        after receiving every message sent before it (RFC 8831 §6.7, RFC 6525).
        """
        channel = self.channel
        self._pending.clear()
        if channel is None or channel.readyState == "closed":
            return
        channel.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), timeout_s)
