"""``GET /api/v3/analysis/{task_id}?wait_s=S``: answered once the task finishes, after S seconds, or at
shutdown, always with the task as it is then; a bad ``wait_s`` is 400 ``bad_wait``.

A WebSocket upload that has not sent ``end`` holds its task ``pending`` for as long as the test likes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.analysis_files import make_file, post_file
from tests.redis_server import RedisServer

WAIT_MAX_S = 30  # the protocol's largest wait_s


def base(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def get(http: aiohttp.ClientSession, base_url: str, task_id: str, wait: str | None
              ) -> tuple[int, dict[str, Any], float]:
    """Status, body and seconds taken of one GET."""
    query = "" if wait is None else f"?wait_s={wait}"
    started = time.monotonic()
    async with http.get(f"{base_url}/api/v3/analysis/{task_id}{query}") as resp:
        return resp.status, await resp.json(), time.monotonic() - started


async def hold_pending(http: aiohttp.ClientSession, base_url: str, size: int
                       ) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A WebSocket upload announced but not sent: its task stays pending."""
    ws = await http.ws_connect(base_url + "/api/v3/upload")
    await ws.send_str(json.dumps({"type": "upload", "filename": "a.wav", "size": size}))
    accepted = await ws.receive_json(timeout=30)
    assert accepted["type"] == "accepted", accepted
    return ws, accepted["task_id"]


async def test_a_waiting_get_answers_once_the_task_finishes(server: TestServer, http: aiohttp.ClientSession,
                                                           tmp_path: Path) -> None:
    data = make_file(tmp_path, "wav", duration_s=5.0, seed=3).path.read_bytes()
    ws, task_id = await hold_pending(http, base(server), len(data))
    try:
        waiting = asyncio.ensure_future(get(http, base(server), task_id, str(WAIT_MAX_S)))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the task is pending: the GET waits
        await ws.send_bytes(data)
        await ws.send_str(json.dumps({"type": "end"}))
        while (message := await ws.receive_json(timeout=60))["type"] != "result":
            assert message["type"] in ("ack", "progress"), message
        status, body, took_s = await asyncio.wait_for(waiting, WAIT_MAX_S)
    finally:
        await ws.close()
    assert status == 200 and body["status"] == "success", body
    assert body["result"] == message["result"]
    assert took_s < WAIT_MAX_S - 5  # answered for the result, not at the end of its wait


async def test_a_wait_ends_after_wait_s_with_the_task_as_it_is(server: TestServer,
                                                              http: aiohttp.ClientSession) -> None:
    ws, task_id = await hold_pending(http, base(server), 10)
    try:
        status, body, took_s = await get(http, base(server), task_id, "0.4")
        assert status == 200 and body["status"] == "pending" and took_s >= 0.4
        for wait in (None, "0"):  # no wait at all
            status, body, _ = await get(http, base(server), task_id, wait)
            assert status == 200 and body["status"] == "pending"
    finally:
        await ws.close()
    status, body, _ = await get(http, base(server), "0" * 32, "0.2")
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize("wait", ["-1", "30.5", "abc", "nan", "inf", ""])
async def test_a_bad_wait_is_400(wait: str, server: TestServer, http: aiohttp.ClientSession) -> None:
    status, body, _ = await get(http, base(server), "0" * 32, wait)
    assert status == 400 and body["error"]["code"] == "bad_wait", body
    assert "wait_s" in body["error"]["message"]


async def test_shutdown_answers_a_waiting_get(server_process: Any, redis_server: RedisServer,
                                              tmp_path: Path) -> None:
    # Without a worker of its own (and none elsewhere) an instance's tasks stay pending through shutdown.
    proc = server_process("--workers", "1", "--redis", redis_server.url, "--no-worker")
    async with aiohttp.ClientSession() as http:
        status, posted = await post_file(http, proc.url, make_file(tmp_path, "wav", duration_s=1.0).path)
        assert status == 202, posted
        waiting = asyncio.ensure_future(get(http, proc.url, posted["task_id"], str(WAIT_MAX_S)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        proc.signal(signal.SIGTERM)
        status, body, took_s = await asyncio.wait_for(waiting, WAIT_MAX_S)
    assert status == 200 and body["status"] == "pending", body
    assert took_s < WAIT_MAX_S - 5  # shutdown did not wait for the GET's wait to run out
    assert proc.wait() == 0
