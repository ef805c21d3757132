"""``GET /api/v3/streams`` (the live streams) and ``GET /api/v3/streams/{stream_id}/events`` (a subscriber's
WebSocket: the stream's onset and status events as they happen, then ``ended``).

With ``--redis``, a subscriber to a stream of another instance while Redis cannot be reached gets
``storage_unavailable`` and close 1013."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import WSMsgType, web

from server import appkeys
from server.events.hub import SubscriberLimit, UnknownStream
from server.events.subscription import Subscription
from server.exceptions import StorageUnavailable
from server.protocol import codec as codec_mod
from server.protocol import stream_messages as msg
from server.protocol.codec import Codec, decode_frame
from server.protocol.errors import CloseCode, ProtocolError
from server.transport.stream_socket import StreamSocket, open_socket

SUBSCRIBER_MESSAGE_LIMIT_BYTES = 64 * 1024  # subscribers send nothing that needs more
# Kernel send buffer of a subscriber's socket. Without a cap Linux grows it to megabytes for a client that
# does not read, hiding the backlog from the bounded queue (stale events, unbounded memory per subscriber).
SUBSCRIBER_SEND_BUFFER_BYTES = 32 * 1024


def _cap_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SEND_BUFFER_BYTES)


async def list_streams(request: web.Request) -> web.Response:
    return web.json_response({"streams": await request.app[appkeys.HUB].streams()})


async def _send_events(ws: StreamSocket, codec: Codec, subscription: Subscription) -> None:
    """Forward events until the stream's last one (``ended``) or the subscriber leaves."""
    while True:
        event = await subscription.get()
        if event is None:
            return
        try:
            await codec_mod.send(ws, codec, event)
        except (ConnectionError, RuntimeError):
            return


async def _read(ws: StreamSocket, codec: Codec) -> None:
    """Read (for heartbeats and close frames) until the socket closes; subscribers send no messages."""
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            with contextlib.suppress(ProtocolError):
                decode_frame(codec, message.type, message.data)
            error = ProtocolError("unexpected_message", "subscribers send no messages; ignored", None)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await codec_mod.send(ws, codec, error.to_message())


def _refusal(exc: UnknownStream | SubscriberLimit | StorageUnavailable) -> ProtocolError:
    if isinstance(exc, UnknownStream):
        return ProtocolError("unknown_stream", str(exc), CloseCode.POLICY)
    if isinstance(exc, SubscriberLimit):
        return ProtocolError("subscriber_limit", str(exc), CloseCode.TRY_AGAIN_LATER)
    return ProtocolError("storage_unavailable", f"{exc} (streams of other instances cannot be watched now)",
                         CloseCode.TRY_AGAIN_LATER)


async def events_handler(request: web.Request) -> web.StreamResponse:
    config = request.app[appkeys.CONFIG]
    ws = await open_socket(request, config, receive_limit_bytes=SUBSCRIBER_MESSAGE_LIMIT_BYTES)
    if not isinstance(ws, StreamSocket):
        return ws  # the HTTP refusal
    try:
        return await _subscriber(request, ws)
    finally:
        ws.detach()  # freed once closed, not at the collector's next full pass (StreamSocket.detach)


async def _subscriber(request: web.Request, ws: StreamSocket) -> web.StreamResponse:
    app = request.app
    config, hub = app[appkeys.CONFIG], app[appkeys.HUB]
    codec = ws.codec
    _cap_send_buffer(request)
    stream_id = request.match_info["stream_id"]
    subscription: Subscription | None = None
    try:
        subscription = await hub.subscribe(stream_id, config.subscriber_queue)
        stream = await hub.describe(stream_id)
    except (UnknownStream, SubscriberLimit, StorageUnavailable) as exc:
        if subscription is not None:  # the stream ended, or Redis went away, in between
            subscription.close()
        error = _refusal(exc)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await codec_mod.send(ws, codec, error.to_message())
        await ws.close(code=error.close_code or CloseCode.POLICY, message=error.code.encode())
        return ws
    try:
        await codec_mod.send(ws, codec, msg.subscribed(stream))
        sender = asyncio.create_task(_send_events(ws, codec, subscription))
        reader = asyncio.create_task(_read(ws, codec))
        await asyncio.wait((sender, reader), return_when=asyncio.FIRST_COMPLETED)
        # Stop reading before closing: aiohttp drops the TCP connection without waiting for the client's
        # close frame when close() runs while another task is inside receive().
        for task in (sender, reader):
            task.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        subscription.close()
    if not ws.closed:
        await ws.close(code=CloseCode.NORMAL)
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v3/streams", list_streams)
    app.router.add_get("/api/v3/streams/{stream_id}/events", events_handler)
