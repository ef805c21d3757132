"""``max_queued_jobs`` holds under concurrent uploads (HTTP and WebSocket at once), and an HTTP upload body
has a time limit (``body_timeout_s``, ``min_body_bytes_per_s``: 408) that shutdown does not wait for."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.config import Config
from tests.analysis_files import make_file, wait_finished
from tests.conftest import ServerProcess, StartServer, run_async

BOUNDARY = b"XyZ"


def multipart(data: bytes, filename: str = "a.wav") -> bytes:
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + filename.encode() + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data
            + b"\r\n--" + BOUNDARY + b"--\r\n")


def request_head(host: str, length: int) -> bytes:
    return (f"POST /api/v3/analysis HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader, timeout_s: float) -> tuple[int, dict[str, object]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, json.loads(await asyncio.wait_for(reader.readexactly(length), timeout_s))


class HeldUpload:
    """An HTTP upload whose body is sent up to its last bytes, then held."""

    def __init__(self, server: TestServer, body: bytes) -> None:
        self.server = server
        self.body = body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.server.host, self.server.port)
        self.writer.write(request_head("x", len(self.body)) + self.body[:-10])
        await self.writer.drain()

    async def refused(self, wait_s: float) -> tuple[int, dict[str, object]] | None:
        """The answer if one comes within ``wait_s`` (before the body is complete), else ``None``."""
        assert self.reader is not None
        try:
            return await read_response(self.reader, wait_s)
        except TimeoutError:
            return None

    async def finish(self) -> tuple[int, dict[str, object]]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.body[-10:])
        await self.writer.drain()
        return await read_response(self.reader, 60)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def ws_reserve(http: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientWebSocketResponse,
                                                                     dict[str, object]]:
    ws = await http.ws_connect(url)
    await ws.send_str(json.dumps({"type": "upload", "filename": "a.wav", "size": 100}))
    return ws, await ws.receive_json(timeout=30)


async def test_concurrent_uploads_never_pass_max_queued_jobs(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server(max_queued_jobs=3)
    body = multipart(make_file(tmp_path, "wav", duration_s=1.0).path.read_bytes())
    held = [HeldUpload(server, body) for _ in range(10)]
    ws_url = server.make_url("/api/v3/upload")
    # Ten HTTP uploads and ten WebSocket uploads arrive at once; none has completed.
    _, reserved = await asyncio.gather(asyncio.gather(*(upload.start() for upload in held)),
                                       asyncio.gather(*(ws_reserve(http, str(ws_url)) for _ in range(10))))
    refusals = await asyncio.gather(*(upload.refused(3.0) for upload in held))
    admitted_http = [upload for upload, refusal in zip(held, refusals, strict=True) if refusal is None]
    admitted_ws = [first for _, first in reserved if first["type"] == "accepted"]
    assert len(admitted_http) + len(admitted_ws) == 3, (refusals, [first for _, first in reserved])
    for refusal in refusals:
        assert refusal is None or (refusal[0] == 503 and refusal[1]["error"]["code"] == "queue_full"), refusal  # type: ignore[index]
    for _, first in reserved:
        assert first["type"] == "accepted" or first["code"] == "queue_full", first
    # The admitted HTTP uploads complete: each is a task, analysed.
    for upload in admitted_http:
        status, answer = await upload.finish()
        assert status == 202, answer
        done = await wait_finished(http, str(server.make_url("")).rstrip("/"), str(answer["task_id"]))
        assert done["status"] == "success", done
    for ws, _ in reserved:
        await ws.close()
    for upload in held:
        await upload.close()


async def test_a_stalled_or_dripping_body_gets_408_and_keeps_nothing(
    start_server: StartServer, config: Config
) -> None:
    server = await start_server(body_timeout_s=1.0, min_body_bytes_per_s=1000)
    body = multipart(b"\1" * 20000)
    # Stalled: part of the body, then nothing.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_head("x", len(body)) + body[:500])
    started = time.monotonic()
    status, answer = await read_response(reader, 10)
    assert status == 408 and answer["error"]["code"] == "body_timeout", answer  # type: ignore[index]
    assert time.monotonic() - started < 5
    writer.close()
    await writer.wait_closed()
    # Dripping: a byte every 0.1 s never stops short of the idle limit, but is far below the rate.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_head("x", len(body)) + body[:200])
    started = time.monotonic()
    answered: asyncio.Task[tuple[int, dict[str, object]]] = asyncio.create_task(read_response(reader, 10))
    for byte in body[200:]:
        if answered.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
    status, answer = await answered
    assert status == 408 and answer["error"]["code"] == "body_timeout", answer  # type: ignore[index]
    assert "min_body_bytes_per_s" in answer["error"]["message"], answer  # type: ignore[index]
    assert time.monotonic() - started < 5
    writer.close()
    await writer.wait_closed()
    assert list((config.data_dir / "uploads").iterdir()) == []


def test_a_stalled_upload_does_not_hold_shutdown(server_process: Callable[..., ServerProcess]) -> None:
    proc = server_process("--workers", "1")  # the default body timeout: 30 s
    assert proc.proc is not None
    host, port = proc.url.removeprefix("http://").split(":")
    body = multipart(b"\1" * 20000)

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_head(host, len(body)) + body[:500])
        await writer.drain()
        await asyncio.sleep(1.0)  # the handler is waiting for the rest of the body
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        status, answer = await read_response(reader, 10)
        assert status == 503 and answer["error"]["code"] == "shutting_down", answer  # type: ignore[index]
        await asyncio.to_thread(proc.wait, 20)
        assert time.monotonic() - started < 10
        writer.close()
        await writer.wait_closed()

    run_async(scenario())
    assert not [line for line in proc.output if "Traceback" in line], list(proc.output)[-20:]


async def test_a_stalled_webrtc_offer_body_gets_408(start_server: StartServer) -> None:
    server = await start_server(body_timeout_s=1.0)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /api/v3/webrtc/offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000\r\n\r\n{\"sdp\": \"v=0")
    started = time.monotonic()
    status, answer = await read_response(reader, 10)
    assert status == 408 and answer["error"]["code"] == "body_timeout", answer  # type: ignore[index]
    assert time.monotonic() - started < 5
    writer.close()
    await writer.wait_closed()


@pytest.fixture
def impatient_server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    """One server for every example (a function-scoped fixture is set up once per test, not per example)."""
    return server_process("--workers", "1", "--body-timeout-s", "0.5", "--min-body-bytes-per-s", "2000")


pieces = st.tuples(st.integers(min_value=1, max_value=40), st.floats(min_value=0.0, max_value=0.3))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=st.integers(min_value=0, max_value=3000), drip=st.lists(pieces, max_size=30))
def test_any_body_that_stalls_or_drips_is_refused_in_time_and_keeps_nothing(
    impatient_server: ServerProcess, tmp_path: Path, sent: int, drip: list[tuple[int, float]]
) -> None:
    """The class: any prefix of the body, then any trickle of small pieces, then nothing."""
    proc = impatient_server
    host, port = proc.url.removeprefix("http://").split(":")
    body = multipart(b"\1" * 4000)

    async def scenario() -> tuple[int, dict[str, object], float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_head(host, len(body)) + body[:sent])
        started = time.monotonic()
        answered = asyncio.create_task(read_response(reader, 30))
        at = sent
        for size, pause_s in drip:
            if answered.done() or at + size >= len(body):
                break
            writer.write(body[at:at + size])
            at += size
            await asyncio.sleep(pause_s)
        status, answer = await answered
        writer.close()
        await writer.wait_closed()
        return status, answer, time.monotonic() - started

    status, answer, took_s = run_async(scenario())
    assert status == 408 and answer["error"]["code"] == "body_timeout", answer  # type: ignore[index]
    # At most the idle limit after the last piece, or the rate check once the body is older than it.
    assert took_s < 0.5 + sum(pause for _, pause in drip) + 3.0, took_s
    assert list((tmp_path / "data" / "uploads").iterdir()) == []

