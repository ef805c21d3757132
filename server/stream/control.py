"""What a publisher's control messages do to its stream, for every transport (WebSocket, WebRTC, ...).

A transport parses the message (:func:`~server.protocol.stream_messages.parse_client_message`) and hands
it to :func:`handle` with itself as the :class:`Controlled` side: the reply and the end of the connection
are the transport's, the meaning of each message is here. A new client message is a new entry of
:data:`HANDLERS` (and its type and parser in :mod:`server.protocol.stream_messages`); no transport changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from server.exceptions import SettingsError
from server.protocol import stream_messages as msg
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import ClientMessage, Configure, Event, Keepalive, Stop
from server.stream.session import StreamSession


class Controlled(Protocol):
    """The transport side of a publisher's stream, as control messages need it."""

    def reply(self, message: Event) -> None:
        """Send ``message`` to the publisher now, past its queue limit (it answers the publisher's own)."""

    def stop(self) -> None:
        """The publisher asked to stop: read nothing more, analyse everything received, send the remaining
        onsets and ``stopped``, then close the connection."""


def _configure(session: StreamSession, message: Configure, transport: Controlled) -> None:
    try:
        settings = session.configure(message.settings)
    except SettingsError as exc:
        raise ProtocolError("bad_settings", f"{exc}; the previous settings stay in force", None) from None
    transport.reply(msg.configured(settings.to_dict()))


def _stop(session: StreamSession, message: Stop, transport: Controlled) -> None:
    transport.stop()


def _keepalive(session: StreamSession, message: Keepalive, transport: Controlled) -> None:
    """Nothing to do: its arrival already counted as activity (the transport touched the session)."""


Handler = Callable[[StreamSession, Any, Controlled], None]

# What each control message of a running stream does, by its type.
HANDLERS: Mapping[type, Handler] = MappingProxyType({
    Configure: _configure,
    Keepalive: _keepalive,
    Stop: _stop,
})


def handle(session: StreamSession, message: ClientMessage, transport: Controlled) -> None:
    """Apply a control message to a running stream. Raises a non-fatal :class:`ProtocolError` for a
    message it refuses (the stream goes on); ``start`` again is ``already_started``."""
    handler = HANDLERS.get(type(message))
    if handler is None:
        raise ProtocolError("already_started", "this stream has already started", None)
    handler(session, message, transport)
