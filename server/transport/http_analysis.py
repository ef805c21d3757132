"""``POST /api/v3/analysis`` (upload a file, get a task id) and ``GET /api/v3/analysis/{task_id}``.

``GET …?wait_s=S`` answers once the task has finished (or after ``S`` seconds, or at shutdown, with the task
as it is then): woken when the outcome is stored (by this instance's runner, or with ``--redis`` by the job
change another process publishes), so a client sees the result at once instead of up to a polling
interval later.

The upload is streamed from the multipart body to disk chunk by chunk; the 202 answer comes once it is
stored, before analysis. Limits are checked before the body is read (``Content-Length``, also in answer
to ``Expect: 100-continue``) and while it is read (the running byte count). With ``--redis``, while
Redis cannot be reached both endpoints answer 503 ``storage_unavailable``. See docs/protocol.md,
"Whole-file analysis".
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

from server import appkeys
from server.dsp import DetectorSettings
from server.exceptions import SettingsError, StorageUnavailable, TransientError
from server.jobs.model import Job
from server.jobs.service import JobService, QueueFull, parse_settings
from server.jobs.uploads import StorageFull, UploadTooLarge, UploadWriter
from server.protocol.codec import clip, parse_json
from server.protocol.errors import ProtocolError, json_error
from server.security.expect import guard_expect
from server.transport import body_timeout
from server.transport.body_timeout import BODY_CLOCKS, BodyClock, BodyTimeout, refusal

READ_CHUNK_BYTES = 1 << 18
SETTINGS_MAX_BYTES = 1 << 16  # the `settings` field's largest accepted size
BODY_OVERHEAD_BYTES = 1 << 17  # what a multipart body may add to the file: boundaries, headers, settings
FILENAME_MAX_CHARS = 255
TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")
RETRY_AFTER_S = "5"
# What aiohttp's multipart reader raises on a malformed body (Warning: when warnings are errors, as in tests).
MALFORMED = (ValueError, AssertionError, HttpProcessingError, Warning)
WAIT_MAX_S = 30.0  # longest ?wait_s= a GET may wait for its task to finish
WAIT_REREAD_S = 1.0  # a waiting GET reads its task again this often, in case a wake-up was missed


class Waits:
    """The GETs waiting for their task to finish, by task id; shutdown answers them at once."""

    def __init__(self) -> None:
        self.tasks: Counter[str] = Counter()
        self.stopping = False


WAITS = web.AppKey("analysis_waits", Waits)


class BadUpload(TransientError):
    """A client mistake in the upload request: answered with ``status`` and a JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _precheck(request: web.Request, service: JobService) -> None:
    """What can be refused from the headers alone."""
    if request.content_type != "multipart/form-data":
        raise BadUpload(400, "not_multipart", "send the file as multipart/form-data in a field named 'file' "
                        f"(got Content-Type {clip(request.content_type)!r})")
    limit = service.config.max_upload_bytes
    length = request.content_length
    if length is not None and length > limit + BODY_OVERHEAD_BYTES:
        raise BadUpload(413, "too_large", f"the request body is {length} bytes; files may be at most "
                        f"{limit} bytes")


def _unavailable(exc: StorageUnavailable) -> BadUpload:
    return BadUpload(503, "storage_unavailable", str(exc))


async def _capacity(service: JobService) -> None:
    try:
        await service.check_capacity()
    except QueueFull as exc:
        raise BadUpload(503, "queue_full", str(exc)) from None
    except StorageUnavailable as exc:
        raise _unavailable(exc) from None
    except StorageFull as exc:
        raise BadUpload(507, "insufficient_storage", str(exc)) from None


def _error(exc: BadUpload) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_S} if exc.status == 503 else None
    return json_error(exc.status, exc.code, exc.message, headers)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect: 100-continue``: refuse from the headers, or invite the body."""
    service = request.app[appkeys.JOBS]
    try:
        _precheck(request, service)
        await _capacity(service)
    except BadUpload as exc:
        return _error(exc)
    if request.version == HttpVersion11:
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return json_error(417, "expectation_failed", "only 'Expect: 100-continue' is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


async def _read_settings(part: BodyPartReader, clock: BodyClock) -> object:
    data = bytearray()
    while chunk := await clock.read(part.read_chunk(READ_CHUNK_BYTES)):
        clock.count(len(chunk))
        data += chunk
        if len(data) > SETTINGS_MAX_BYTES:
            raise BadUpload(400, "bad_settings",
                            f"the settings field is larger than {SETTINGS_MAX_BYTES} bytes")
    try:
        return parse_json(data) if data.strip() else None
    except ProtocolError as exc:
        code = exc.code if exc.code == "too_deep" else "bad_settings"
        raise BadUpload(400, code, f"the settings field is not a JSON object: {exc.message}") from None


def _filename(part: BodyPartReader) -> str:
    name = part.filename or ""
    return re.split(r"[\\/]", name)[-1][:FILENAME_MAX_CHARS]


async def _receive(request: web.Request, service: JobService, task_id: str, clock: BodyClock
                   ) -> tuple[UploadWriter | None, str, DetectorSettings]:
    """Read the multipart body: the stored file's writer (``None``: no file), its name and the settings.

    On any failure the writer (if one was opened) is discarded before the exception goes on.
    """
    try:
        reader = await request.multipart()
    except MALFORMED as exc:
        raise BadUpload(400, "bad_multipart",
                        f"the multipart body cannot be read: {clip(str(exc))}") from None
    writer: UploadWriter | None = None
    filename = ""
    settings = parse_settings(None)
    try:
        while (part := await clock.read(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadUpload(400, "bad_multipart", "nested multipart bodies are not accepted")
            if part.name == "settings":
                settings = parse_settings(await _read_settings(part, clock))
            elif part.name == "file":
                if writer is not None:
                    raise BadUpload(400, "duplicate_field", "send exactly one field named 'file'")
                filename = _filename(part)
                writer = service.writer(task_id)
                await writer.open()
                while chunk := await clock.read(part.read_chunk(READ_CHUNK_BYTES)):
                    clock.count(len(chunk))
                    await writer.write(chunk)
            else:
                raise BadUpload(400, "unexpected_field", f"unexpected field {part.name!r}; send 'file' "
                                "and optionally 'settings'")
    except MALFORMED as exc:  # malformed multipart framing or part headers
        if writer is not None:
            await service.shielded(writer.discard())
        if isinstance(exc, SettingsError):
            raise
        raise BadUpload(400, "bad_multipart",
                        f"the multipart body is malformed: {clip(str(exc))}") from None
    except BaseException:
        if writer is not None:
            await service.shielded(writer.discard())
        raise
    return writer, filename, settings


async def post_analysis(request: web.Request) -> web.Response:
    service = request.app[appkeys.JOBS]
    try:
        _precheck(request, service)
        task_id = service.new_task_id()
        async with service.admission():  # a place in the queue, held until the job is stored
            with request.app[BODY_CLOCKS].clock(service.config) as clock:
                writer, filename, settings = await _receive(request, service, task_id, clock)
            if writer is None:
                raise BadUpload(400, "no_file", "the multipart body has no field named 'file'")
            if writer.received_bytes == 0:
                await service.shielded(writer.discard())
                raise BadUpload(400, "empty", "the uploaded file is empty")
            try:
                await service.submit(writer, task_id, filename, settings)
            except BaseException:  # the service deleted a committed upload; drop a part not committed
                await service.shielded(writer.discard())
                raise
    except BadUpload as exc:
        return _error(exc)
    except QueueFull as exc:
        return _error(BadUpload(503, "queue_full", str(exc)))
    except StorageUnavailable as exc:  # the service deleted the stored upload
        return _error(_unavailable(exc))
    except SettingsError as exc:
        return json_error(400, "bad_settings", str(exc))
    except UploadTooLarge as exc:
        return json_error(413, "too_large", str(exc))
    except StorageFull as exc:  # what arrived is deleted; the server goes on
        return json_error(507, "insufficient_storage", str(exc))
    except BodyTimeout as exc:
        return refusal(exc)
    return web.json_response({"task_id": task_id, "status": "pending"}, status=202)


def _wait_s(value: str | None) -> float:
    """The ``wait_s`` query parameter: seconds, 0 to :data:`WAIT_MAX_S` (0 when absent)."""
    if value is None:
        return 0.0
    try:
        wait_s = float(value)
    except ValueError:
        wait_s = math.nan
    if not 0.0 <= wait_s <= WAIT_MAX_S:  # NaN too
        raise BadUpload(400, "bad_wait", f"wait_s must be a number of seconds from 0 to {WAIT_MAX_S:g} "
                        f"(got {clip(value)!r})")
    return wait_s


async def _until_finished(app: web.Application, service: JobService, job: Job, wait_s: float) -> Job | None:
    """``job`` read again until it has finished, ``wait_s`` has passed or the server shuts down."""
    waits, task_id = app[WAITS], job.task_id
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + wait_s
    waits.tasks[task_id] += 1
    try:
        current: Job | None = job
        while current is not None and not current.status.finished and not waits.stopping:
            left_s = deadline_s - loop.time()
            if left_s <= 0:
                break
            await service.watch.wait(task_id, min(left_s, WAIT_REREAD_S))
            current = await service.get(task_id)
        return current
    finally:
        waits.tasks[task_id] -= 1
        if not waits.tasks[task_id]:
            del waits.tasks[task_id]


async def _stop_waits(app: web.Application) -> None:
    waits, service = app[WAITS], app[appkeys.JOBS]
    waits.stopping = True
    for task_id in list(waits.tasks):
        service.watch.notify(task_id)


async def get_analysis(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    service = request.app[appkeys.JOBS]
    try:
        wait_s = _wait_s(request.query.get("wait_s"))
        job = await service.get(task_id) if TASK_ID_RE.match(task_id) else None
        if job is not None and wait_s > 0 and not job.status.finished:
            job = await _until_finished(request.app, service, job, wait_s)
    except BadUpload as exc:
        return _error(exc)
    except StorageUnavailable as exc:
        return _error(_unavailable(exc))
    except StorageFull as exc:  # the job store could not be opened for lack of room (yet)
        return _error(BadUpload(503, "insufficient_storage", str(exc)))
    if job is None:
        return json_error(404, "not_found",
                          f"no task {task_id!r} (unknown, or deleted after the retention time)")
    return web.Response(text=job.status_json(), content_type="application/json")


def setup(app: web.Application) -> None:
    """Route the analysis API to the job service (:data:`~server.appkeys.JOBS`, built in ``app.py``)."""
    body_timeout.setup(app)
    app.router.add_post("/api/v3/analysis", post_analysis, expect_handler=guard_expect(expect_continue))
    app.router.add_get("/api/v3/analysis/{task_id}", get_analysis)
    app[WAITS] = Waits()
    app.on_shutdown.append(_stop_waits)
