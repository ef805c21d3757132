"""``GET /api/v3/upload``: upload a file over a WebSocket, then follow its analysis on the same socket.

``upload`` → ``accepted``; binary chunks, acknowledged with ``ack`` as they reach the disk (the client
keeps at most ``window_bytes`` unacknowledged); ``end`` → ``progress``... → ``result`` (or ``error``).
The job is the same one ``GET /api/v3/analysis/{task_id}`` shows. With ``--redis``, Redis being
unreachable ends the socket with ``storage_unavailable`` and close 1013. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from server import appkeys
from server.exceptions import SettingsError, StorageUnavailable
from server.jobs.model import ErrorCode, JobError
from server.jobs.service import JobService, QueueFull, parse_settings
from server.jobs.uploads import StorageFull, UploadWriter
from server.protocol import upload_messages as msg
from server.protocol.codec import Audio, Codec, decode_frame, send
from server.protocol.errors import CloseCode, ProtocolError
from server.transport.stream_socket import StreamSocket, open_socket

log = logging.getLogger(__name__)

WINDOW_BYTES = 4 << 20  # unacknowledged bytes a client may have in flight
FOLLOW_POLL_S = 1.0  # re-read the job at least this often while waiting for its progress
DATA_TYPES = (WSMsgType.BINARY, WSMsgType.TEXT)
Closing = tuple[CloseCode, bytes]  # the close code and reason to end a socket with


def _unavailable(exc: StorageUnavailable, consequence: str = "") -> ProtocolError:
    return ProtocolError("storage_unavailable", f"{exc}{consequence}", CloseCode.TRY_AGAIN_LATER)


class Uploading:
    """One upload socket: receive the file, then report the job's progress and result."""

    def __init__(self, ws: StreamSocket, codec: Codec, service: JobService) -> None:
        self.ws = ws
        self.codec = codec
        self.service = service
        self.task_id = ""
        self.writer: UploadWriter | None = None

    async def run(self) -> None:
        try:
            upload = await self._first()
            if upload is None or not await self._accept(upload):
                return
            if not await self._receive(upload.size):
                return
            follower = asyncio.create_task(self._follow())
            await self._after_end(follower)
        except ProtocolError as exc:
            await self._abandon(f"the upload ended early: {exc.message}")
            if not self.ws.closed:
                with contextlib.suppress(ConnectionError):
                    await send(self.ws, self.codec, exc.to_message())
                await self.ws.close(code=exc.close_code or CloseCode.POLICY, message=exc.code.encode())
        finally:
            await self._abandon("the connection failed during the upload")

    async def _abandon(self, reason: str) -> None:
        """Fail the reserved job of an upload that did not complete (once), deleting what arrived."""
        writer, self.writer = self.writer, None
        if writer is not None:
            await self.service.abandon(self.task_id, JobError(ErrorCode.UPLOAD_INCOMPLETE.value, reason),
                                       writer)

    async def _message(self) -> Audio | msg.ClientMessage | None:
        """The next message (``None`` when the socket closed); the idle timeout is a fatal error."""
        idle_timeout_s = self.service.config.idle_timeout_s
        try:
            message = await self.ws.receive_within(idle_timeout_s)
        except TimeoutError:
            raise ProtocolError("idle_timeout", f"nothing received for {idle_timeout_s:g} s",
                                CloseCode.POLICY) from None
        if message.type not in DATA_TYPES:
            return None
        frame = decode_frame(self.codec, message.type, message.data)
        if isinstance(frame, Audio):
            return frame
        return msg.parse_client_message(frame)

    async def _first(self) -> msg.Upload | None:
        first = await self._message()
        if first is None:
            return None
        if not isinstance(first, msg.Upload):
            raise ProtocolError("not_started", "the first message must be 'upload'", CloseCode.POLICY)
        return first

    async def _accept(self, upload: msg.Upload) -> bool:
        service = self.service
        limit = service.config.max_upload_bytes
        if upload.size > limit:
            raise ProtocolError("too_large", f"the file is {upload.size} bytes; at most {limit} are accepted",
                                CloseCode.TOO_BIG)
        if upload.size == 0:
            raise ProtocolError("empty", "the file is empty", CloseCode.POLICY)
        try:
            settings = parse_settings(upload.settings)
            async with service.admission():  # the place is the reserved job once it is stored
                task_id = service.new_task_id()
                await service.reserve(task_id, upload.filename, settings)
                self.task_id = task_id
        except SettingsError as exc:
            raise ProtocolError("bad_settings", str(exc), CloseCode.POLICY) from None
        except QueueFull as exc:
            raise ProtocolError("queue_full", str(exc), CloseCode.TRY_AGAIN_LATER) from None
        except StorageUnavailable as exc:
            raise _unavailable(exc) from None
        except StorageFull as exc:  # no job was stored
            raise ProtocolError("insufficient_storage", str(exc), CloseCode.TRY_AGAIN_LATER) from None
        self.writer = service.writer(self.task_id)
        await self.writer.open()
        await send(self.ws, self.codec, msg.accepted(self.task_id, WINDOW_BYTES, self.ws.limit_bytes))
        return True

    async def _receive(self, size: int) -> bool:
        """Store the file's bytes until ``end``; ``True`` once the job is queued."""
        writer = self.writer
        assert writer is not None
        while True:
            message = await self._message()
            if message is None:
                await self._abandon(f"the connection closed after {writer.received_bytes} of {size} bytes")
                return False
            if isinstance(message, Audio):
                if writer.received_bytes + len(message.data) > size:
                    raise ProtocolError("size_mismatch", f"more than the announced {size} bytes arrived",
                                        CloseCode.POLICY)
                before = writer.written_bytes
                try:
                    await writer.write(message.data)
                except StorageFull as exc:  # run() fails the task and deletes what arrived
                    raise ProtocolError("insufficient_storage", str(exc), CloseCode.TRY_AGAIN_LATER) from None
                if writer.written_bytes != before:
                    await send(self.ws, self.codec, msg.ack(writer.written_bytes))
            elif isinstance(message, msg.End):
                if writer.received_bytes != size:
                    raise ProtocolError("size_mismatch", f"'end' after {writer.received_bytes} of the "
                                        f"announced {size} bytes", CloseCode.POLICY)
                self.writer = None  # the service owns the upload now (even if this handler is cancelled)
                try:
                    await self.service.enqueue(writer, self.task_id)
                except StorageFull as exc:  # not stored: run() fails the task and deletes what arrived
                    self.writer = writer
                    raise ProtocolError("insufficient_storage", str(exc), CloseCode.TRY_AGAIN_LATER) from None
                except StorageUnavailable as exc:  # the service deleted the upload; the task fails
                    raise _unavailable(exc, "; the file was not kept: send it again") from None
                await send(self.ws, self.codec, msg.ack(writer.written_bytes))
                return True
            else:
                raise ProtocolError("already_started", "'upload' was already sent", CloseCode.POLICY)

    async def _after_end(self, follower: asyncio.Task[Closing]) -> None:
        """Read while the follower reports; anything but a close is an error. The follower's close is done
        here, once the read is stopped: aiohttp drops the connection without waiting for the client's close
        frame when ``close()`` runs while another task is inside ``receive()`` (the client saw 1006)."""
        reading = asyncio.create_task(self.ws.receive())
        try:
            await asyncio.wait((reading, follower), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                await asyncio.wait((reading,))
            if reading.done() and not reading.cancelled():
                if reading.result().type in DATA_TYPES:
                    follower.cancel()
                    error = ProtocolError("already_ended", "nothing may follow 'end'; the analysis goes on "
                                          f"and GET /api/v3/analysis/{self.task_id} shows it",
                                          CloseCode.POLICY)
                    with contextlib.suppress(ConnectionError):
                        await send(self.ws, self.codec, error.to_message())
                    await self.ws.close(code=CloseCode.POLICY, message=error.code.encode())
                return  # or the client closed first (aiohttp answered its close frame)
            code, reason = follower.result()
            await self.ws.close(code=code, message=reason)
        finally:
            reading.cancel()
            follower.cancel()
            await asyncio.wait((reading, follower))

    async def _follow(self) -> Closing:
        """Send ``progress`` as the job advances, then its ``result`` or ``error``; the close to follow."""
        service, task_id = self.service, self.task_id
        last: tuple[str, float] | None = None
        while True:
            try:
                job = await service.get(task_id)
            except StorageUnavailable as exc:  # the task itself is queued (or running) and goes on
                error = _unavailable(exc, f"; the task goes on: GET /api/v3/analysis/{task_id} shows it "
                                          "once the storage answers again")
                await send(self.ws, self.codec, {**error.to_message(), "task_id": task_id})
                return CloseCode.TRY_AGAIN_LATER, error.code.encode()
            if job is None:
                error = ProtocolError("not_found", "the task was deleted", CloseCode.SERVER_FAULT)
                await send(self.ws, self.codec, error.to_message())
                return CloseCode.SERVER_FAULT, error.code.encode()
            if job.status.finished:
                if job.error is not None:
                    reply = msg.job_failed(task_id, job.error.code, job.error.message)
                else:
                    reply = msg.result(task_id, job.result() or {})
                await send(self.ws, self.codec, reply)
                return CloseCode.NORMAL, b""
            if (job.status.value, job.progress) != last:
                last = (job.status.value, job.progress)
                await send(self.ws, self.codec, msg.progress(task_id, job.progress))
            await service.watch.wait(task_id, FOLLOW_POLL_S)


async def upload_handler(request: web.Request) -> web.StreamResponse:
    service = request.app[appkeys.JOBS]
    ws = await open_socket(request, service.config)
    if not isinstance(ws, StreamSocket):
        return ws  # the HTTP refusal
    try:
        await Uploading(ws, ws.codec, service).run()
    except ConnectionError:
        pass  # the client went away; a reserved job was already failed
    except Exception:
        log.exception("upload socket failed")
        await ws.close(code=CloseCode.SERVER_FAULT, message=b"internal")
    finally:
        ws.detach()  # freed once closed, not at the collector's next full pass (StreamSocket.detach)
    return ws


def setup(app: web.Application) -> None:
    """Route ``/api/v3/upload`` to the job service (:data:`~server.appkeys.JOBS`, built in app.py)."""
    app.router.add_get("/api/v3/upload", upload_handler)
