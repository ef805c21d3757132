"""A publisher that pauses its audio stays alive with ``keepalive`` messages (or empty audio frames), gets
no reply to them, and the idle timeout still ends a stream that sends nothing at all."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from tests.conftest import StartServer
from tests.stream_client import Publisher

SAMPLE_RATE = 16000
IDLE_TIMEOUT_S = 1.0
PAUSE_S = 3.0  # three idle timeouts


@pytest.mark.parametrize(("codec", "how"), [("json", "keepalive"), ("msgpack", "keepalive"),
                                            ("json", "empty_audio")])
async def test_keepalive_keeps_a_paused_stream_alive(
    start_server: StartServer, http: aiohttp.ClientSession, codec: str, how: str
) -> None:
    server = await start_server(idle_timeout_s=IDLE_TIMEOUT_S, status_interval_s=0.1)
    publisher = await Publisher.open(http, server, codec)
    started = await publisher.start(SAMPLE_RATE)
    assert started["type"] == "started"
    await publisher.send_audio(np.zeros(SAMPLE_RATE // 10, dtype=np.float32))
    loop = asyncio.get_running_loop()
    until = loop.time() + PAUSE_S
    while loop.time() < until:
        if how == "keepalive":
            await publisher.send({"type": "keepalive"})
        else:
            await publisher.send_audio(np.zeros(0, dtype=np.float32))
        await asyncio.sleep(IDLE_TIMEOUT_S / 4)
    messages = await publisher.stop()
    kinds = [m["type"] for m in messages]
    assert "error" not in kinds, messages  # no idle_timeout, and no reply to a keepalive either
    assert kinds[-2:] == ["stopped", "<closed>"] and messages[-1]["code"] == 1000


async def test_without_keepalive_the_idle_timeout_still_ends_the_stream(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(idle_timeout_s=IDLE_TIMEOUT_S, status_interval_s=0.1)
    publisher = await Publisher.open(http, server)
    await publisher.start(SAMPLE_RATE)
    messages = await publisher.receive_all(timeout_s=PAUSE_S * 5)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["idle_timeout"] and messages[-1]["code"] == 1008
