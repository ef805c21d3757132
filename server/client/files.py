"""Whole-file analysis: ``POST /api/v3/analysis`` then polling, or the ``/api/v3/upload`` WebSocket.

Both return the finished task's ``result`` object (docs/protocol.md, "Whole-file analysis") or raise
:class:`ClientError` with the server's error code (for a refused upload or a failed task). ``token``, if
given, goes with every request as ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from server.client.auth import auth_headers
from server.client.errors import ClientError
from server.client.wire import Message, MessageSocket

ANALYSIS_PATH = "/api/v3/analysis"
UPLOAD_PATH = "/api/v3/upload"
POLL_INTERVAL_S = 0.2
MAX_WAIT_S = 30.0  # the largest wait_s the server takes
UPLOAD_CHUNK_BYTES = 256 * 1024
REPLY_TIMEOUT_S = 60.0

Progress = Callable[[float], None]  # called with 0..1 as the analysis advances


async def json_or_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = None
    if response.status >= 400 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ClientError(str(error.get("code")), str(error.get("message", "")), status=response.status)
        raise ClientError(f"http_{response.status}", f"unexpected answer from {response.url}",
                          status=response.status)
    return body


async def submit(session: aiohttp.ClientSession, base_url: str, path: Path,
                 settings: Mapping[str, Any] | None = None, *, token: str | None = None) -> str:
    """Upload ``path`` with ``POST /api/v3/analysis``; the task id."""
    form = aiohttp.FormData()
    if settings is not None:
        form.add_field("settings", json.dumps(dict(settings)), content_type="application/json")
    with path.open("rb") as file:  # aiohttp streams the open file; it is never read whole
        form.add_field("file", file, filename=path.name, content_type="application/octet-stream")
        async with session.post(base_url.rstrip("/") + ANALYSIS_PATH, data=form,
                                headers=auth_headers(token)) as response:
            body = await json_or_error(response)
    return str(body["task_id"])


async def task(session: aiohttp.ClientSession, base_url: str, task_id: str, *,
               token: str | None = None, wait_s: float = 0.0) -> dict[str, Any]:
    """``GET /api/v3/analysis/{task_id}``: the task's status object; with ``wait_s`` (0–30 s) once the task
    has finished or after that long."""
    query = f"?wait_s={wait_s:g}" if wait_s > 0 else ""
    async with session.get(f"{base_url.rstrip('/')}{ANALYSIS_PATH}/{task_id}{query}",
                           headers=auth_headers(token)) as response:
        return await json_or_error(response)


async def wait_for_result(session: aiohttp.ClientSession, base_url: str, task_id: str, *,
                          on_progress: Progress | None = None, poll_interval_s: float = POLL_INTERVAL_S,
                          token: str | None = None) -> dict[str, Any]:
    """Poll the task until it finishes; its ``result``. A failed task raises :class:`ClientError`.

    Each ``GET`` waits up to ``poll_interval_s`` for the task to finish (``wait_s``), so the result comes
    as soon as it is stored and progress every ``poll_interval_s``.
    """
    loop = asyncio.get_running_loop()
    wait_s = min(MAX_WAIT_S, poll_interval_s)
    while True:
        asked_s = loop.time()
        status = await task(session, base_url, task_id, token=token, wait_s=wait_s)
        if on_progress is not None:
            on_progress(float(status.get("progress", 0.0)))
        if status["status"] == "success":
            result: dict[str, Any] = status["result"]
            return result
        if status["status"] == "failed":
            error = status.get("error") or {}
            raise ClientError(str(error.get("code", "failed")), str(error.get("message", "")))
        await asyncio.sleep(max(0.0, poll_interval_s - (loop.time() - asked_s)))  # a server that did not wait


async def analyse_http(session: aiohttp.ClientSession, base_url: str, path: Path,
                       settings: Mapping[str, Any] | None = None, *, on_progress: Progress | None = None,
                       poll_interval_s: float = POLL_INTERVAL_S, token: str | None = None) -> dict[str, Any]:
    """Upload over HTTP and poll until the result is ready."""
    task_id = await submit(session, base_url, path, settings, token=token)
    return await wait_for_result(session, base_url, task_id, on_progress=on_progress,
                                 poll_interval_s=poll_interval_s, token=token)


async def _reply(socket: MessageSocket) -> Message:
    message = await socket.receive(REPLY_TIMEOUT_S)
    if message is None:
        raise ClientError("closed", f"the connection closed (code {socket.close_code})",
                          close_code=socket.close_code)
    if message["type"] == "error":
        await socket.close()  # a fatal error: this waits for the server's close frame and its code
        raise ClientError(str(message.get("code")), str(message.get("message", "")),
                          close_code=socket.close_code)
    return message


async def analyse_ws(session: aiohttp.ClientSession, base_url: str, path: Path,
                     settings: Mapping[str, Any] | None = None, *, on_progress: Progress | None = None,
                     codec: str = "json", token: str | None = None) -> dict[str, Any]:
    """Upload over the ``/api/v3/upload`` WebSocket, keeping within the server's window of unacknowledged
    bytes, then follow the analysis on the same socket; the result."""
    size = path.stat().st_size
    socket = await MessageSocket.connect(session, base_url, UPLOAD_PATH, codec, token=token)
    try:
        upload: dict[str, Any] = {"type": "upload", "filename": path.name, "size": size}
        if settings is not None:
            upload["settings"] = dict(settings)
        await socket.send(upload)
        accepted = await _reply(socket)
        if accepted["type"] != "accepted":
            raise ClientError("bad_reply", f"expected 'accepted', got {accepted['type']!r}")
        window = int(accepted.get("window_bytes", UPLOAD_CHUNK_BYTES))
        chunk_bytes = max(1, min(UPLOAD_CHUNK_BYTES, window, int(accepted.get("max_message_bytes", 1 << 20))))
        sent = acknowledged = 0
        with path.open("rb") as file:
            while chunk := await asyncio.to_thread(file.read, chunk_bytes):
                while sent + len(chunk) - acknowledged > window:
                    message = await _reply(socket)
                    if message["type"] == "ack":
                        acknowledged = int(message["received"])
                await socket.send_audio(chunk)
                sent += len(chunk)
        await socket.send({"type": "end"})
        while True:
            message = await _reply(socket)
            if message["type"] == "progress" and on_progress is not None:
                on_progress(float(message["progress"]))
            elif message["type"] == "result":
                if on_progress is not None:
                    on_progress(1.0)
                result: dict[str, Any] = message["result"]
                return result
    finally:
        await socket.close()
