"""Silent WebSockets on a real server (issue 17, item 2).

- A client that answers the heartbeat's pings but sends nothing is idle: closed after ``idle_timeout_s``
  with ``idle_timeout`` (1008), before ``start``, before ``upload`` and before ``end``.
- Silent upload sockets no longer hold ``max_queued_jobs`` for ever.
- A publisher or upload socket counts toward its client's limit from its handshake (429), others unaffected.
- With a 1,024 open-file limit, 1,050 silent sockets are refused cleanly (503 ``server_full``, one warning),
  and ``/healthz`` keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.conftest import ServerProcess, StartServer

UPLOAD = {"type": "upload", "filename": "a.wav", "size": 1000}
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def error_and_close(ws: aiohttp.ClientWebSocketResponse,
                          timeout_s: float = 30.0) -> tuple[str, int | None]:
    code = ""
    while True:
        message = await ws.receive(timeout=timeout_s)
        if message.type is aiohttp.WSMsgType.TEXT:
            event = json.loads(message.data)
            code = event.get("code", code) if event["type"] == "error" else code
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return code, ws.close_code


@pytest.mark.parametrize("stage", ["before start", "before upload", "before end"])
async def test_pongs_do_not_keep_a_silent_socket_open(start_server: StartServer, http: aiohttp.ClientSession,
                                                      stage: str) -> None:
    server = await start_server(heartbeat_s=0.2, idle_timeout_s=1.5)
    path = "/api/v3/stream" if stage == "before start" else "/api/v3/upload"
    opened = time.monotonic()
    ws = await http.ws_connect(server.make_url(path))  # aiohttp's client answers every ping
    if stage == "before end":
        await ws.send_str(json.dumps(UPLOAD))
        accepted = json.loads((await ws.receive(timeout=30)).data)
        assert accepted["type"] == "accepted"
    assert await error_and_close(ws) == ("idle_timeout", 1008)
    assert 1.4 < time.monotonic() - opened < 20
    if stage == "before end":  # the reserved task fails and frees its place
        async with http.get(server.make_url(f"/api/v3/analysis/{accepted['task_id']}")) as resp:
            task = await resp.json()
        assert (task["status"], task["error"]["code"]) == ("failed", "upload_incomplete")


async def test_silent_uploads_do_not_hold_the_queue(start_server: StartServer,
                                                    http: aiohttp.ClientSession) -> None:
    server = await start_server(heartbeat_s=0.2, idle_timeout_s=2.0, max_queued_jobs=3)
    silent = []
    for _ in range(3):
        ws = await http.ws_connect(server.make_url("/api/v3/upload"))
        await ws.send_str(json.dumps(UPLOAD))
        assert json.loads((await ws.receive(timeout=30)).data)["type"] == "accepted"
        silent.append(ws)
    # Read every silent socket (the client answers pings only while it reads), and send nothing.
    closing = [asyncio.create_task(error_and_close(ws)) for ws in silent]
    late = await http.ws_connect(server.make_url("/api/v3/upload"))
    await late.send_str(json.dumps(UPLOAD))
    assert await error_and_close(late) == ("queue_full", 1013)
    assert await asyncio.gather(*closing) == [("idle_timeout", 1008)] * 3
    again = await http.ws_connect(server.make_url("/api/v3/upload"))
    await again.send_str(json.dumps(UPLOAD))
    assert json.loads((await again.receive(timeout=30)).data)["type"] == "accepted"
    await again.close()


async def handshake(server: TestServer, path: str, local_host: str = "127.0.0.1"
                    ) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse | None, int, str]:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local_host, 0)))
    try:
        return http, await http.ws_connect(server.make_url(path)), 101, ""
    except aiohttp.WSServerHandshakeError as exc:
        async with http.get(server.make_url(path), headers=UPGRADE) as resp:  # the refusal's body
            body: dict[str, Any] = await resp.json()
        return http, None, exc.status, body["error"]["code"] if resp.status >= 400 else ""


@pytest.mark.parametrize(("path", "code"), [("/api/v3/stream", "client_stream_limit"),
                                            ("/api/v3/upload", "client_upload_limit")])
async def test_unstarted_sockets_count_toward_the_client_limit(start_server: StartServer, path: str,
                                                               code: str) -> None:
    server = await start_server(max_streams_per_client=3, idle_timeout_s=60)
    held = [await handshake(server, path) for _ in range(3)]
    assert [status for _, _, status, _ in held] == [101, 101, 101]
    sessions = []
    try:
        http, _, status, refused = await handshake(server, path)
        sessions.append(http)
        assert (status, refused) == (429, code)
        other = await handshake(server, path, local_host="127.0.0.2")  # another client is not affected
        sessions.append(other[0])
        assert other[2] == 101
        first = held[0][1]
        assert first is not None
        await first.close()
        await asyncio.sleep(0.2)
        again = await handshake(server, path)
        sessions.append(again[0])
        assert again[2] == 101
    finally:
        for http in [h for h, _, _, _ in held] + sessions:
            await http.close()


FD_LIMIT = 1024
SOCKETS = 1050


async def open_silent(url: URL, count: int) -> tuple[list[aiohttp.ClientWebSocketResponse], dict[int, int]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    http = aiohttp.ClientSession(connector=connector)
    opened: list[aiohttp.ClientWebSocketResponse] = []
    statuses: dict[int, int] = {}

    async def one() -> None:
        try:
            opened.append(await http.ws_connect(url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(60)))
            statuses[101] = statuses.get(101, 0) + 1
        except aiohttp.WSServerHandshakeError as exc:
            statuses[exc.status] = statuses.get(exc.status, 0) + 1

    for start in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    opened.append(http)  # type: ignore[arg-type]  # closed with the sockets
    return opened, statuses


async def test_running_out_of_descriptors_is_refused_cleanly(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))  # the server inherits it
    try:
        server = ServerProcess(["--port", "0", "--workers", "1", "--data-dir", str(tmp_path / "data"),
                                "--idle-timeout-s", "120", "--max-streams-per-client", "5000",
                                "--rate-limit-per-s", "0",  # 1,050 handshakes at once: not what is tested
                                # No access log: the output keeps only the last 500 lines.
                                "--log-level", "WARNING"]).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    base = URL(server.url)
    held: list[Any] = []
    try:
        held, statuses = await open_silent(base.with_scheme("ws") / "api/v3/stream", SOCKETS)
        assert statuses[101] == FD_LIMIT - 128 and statuses[503] == SOCKETS - statuses[101], statuses
        async with aiohttp.ClientSession() as http:
            async with http.get(base / "healthz") as resp:
                assert resp.status == 200
            async with http.get(base / "api/v3/stream", headers=UPGRADE) as resp:
                assert resp.status == 503 and (await resp.json())["error"]["code"] == "server_full"
                assert resp.headers["Retry-After"]
            for ws in held:
                await ws.close()
            held = []
            await asyncio.sleep(1.0)
            ws = await http.ws_connect((base / "api/v3/stream").with_scheme("ws"))  # room again
            await ws.send_str(json.dumps({"type": "start", "sample_rate": 16000, "channels": 1,
                                          "encoding": "pcm_f32le"}))
            assert json.loads((await ws.receive(timeout=30)).data)["type"] == "started"
            await ws.close()
        lines = list(server.output)
        warnings = [line for line in lines if "refusing WebSockets" in line]
        assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
        assert not [line for line in lines if "Traceback" in line or " ERROR " in line], lines[-20:]
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        server.stop()


def test_plain_connections_filling_the_descriptors_are_logged(tmp_path: Path) -> None:
    """Idle plain HTTP connections are no WebSockets: the event loop refuses connections once no descriptor
    is left, and the server says so in its log; it serves again once they are gone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))
    try:
        server = ServerProcess(["--port", "0", "--workers", "1", "--data-dir", str(tmp_path / "data"),
                                "--log-level", "WARNING"]).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    port = URL(server.url).port
    assert port is not None
    held: list[socket.socket] = []
    try:
        for _ in range(FD_LIMIT):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 30
        while not any("open files in use" in line for line in list(server.output)):
            assert time.monotonic() < deadline, list(server.output)[-10:]
            time.sleep(0.2)
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 30
        while True:  # the server answers again once the connections are gone
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                         timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.5)
        warnings = [line for line in list(server.output) if "open files in use" in line]
        assert len(warnings) == 1 and " WARNING " in warnings[0], warnings  # once a minute at most
    finally:
        for sock in held:
            sock.close()
        server.stop()
