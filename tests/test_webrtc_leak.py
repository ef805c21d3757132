"""Hundreds of WebRTC connect/disconnect cycles leave nothing behind: no peer, no stream, no open file,
no task, no thread beyond the baseline."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer

from server import appkeys
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.conftest import StartServer

CYCLES = 200
CONCURRENCY = 4  # cycles in flight at once
SETTLE_S = 30.0
# The default executor (aiortc's encoder and getaddrinfo run there) may start a few more threads, and the
# HTTP client its keep-alive sockets, when the load changes; a leak per cycle would show in hundreds.
FDS_SLACK = 4
THREADS_SLACK = 3
SILENCE = np.zeros(48000, np.float32)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks() -> int:
    return len(asyncio.all_tasks())


async def cycle(http: aiohttp.ClientSession, base_url: str, early_hang_up: bool) -> None:
    """Connect and hang up, or (``early_hang_up``) hang up before the connection is established."""
    client = WebRtcClient.offerer(ArrayTrack(SILENCE))
    try:
        if early_hang_up:
            response = await client.post_offer(http, base_url)
            assert response.status == 200
            response.release()
        else:
            await client.connect(http, base_url)
            assert (await client.receive())["type"] == "started"
    finally:
        await client.close()


async def settle(server: TestServer, fds: int, task_count: int, threads: int) -> None:
    """Wait until the server's registries are empty and resources are back to the baseline."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        gc.collect()
        state = (len(server.app[appkeys.WEBRTC].peers), len(server.app[appkeys.STREAMS].registry),
                 open_fds() - fds, tasks() - task_count, threading.active_count() - threads)
        if state[:2] == (0, 0) and state[2] <= FDS_SLACK and state[3] <= 0 and state[4] <= THREADS_SLACK:
            return
        assert time.monotonic() < deadline, f"left behind (peers, streams, fds, tasks, threads): {state}"
        await asyncio.sleep(0.1)


async def test_connect_disconnect_cycles_leak_nothing(start_server: StartServer) -> None:
    # Peers whose client left before connecting end at the connect timeout.
    server = await start_server(webrtc_connect_timeout_s=5.0)
    # No HTTP keep-alive: pooled sockets would count as open files.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await run_cycles(server, http)


async def run_cycles(server: TestServer, http: aiohttp.ClientSession) -> None:
    base_url = str(server.make_url("")).rstrip("/")

    async def run(cycles: int, early_every: int) -> None:
        queue = iter(range(cycles))

        async def worker() -> None:
            for index in queue:
                await cycle(http, base_url, index % early_every == early_every - 1)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    # Warm up: lazy imports, codec tables, the default executor's threads.
    await run(2 * CONCURRENCY, early_every=CYCLES)
    await settle(server, open_fds() + 100, tasks() + 100, threading.active_count() + 100)
    fds, task_count, threads = open_fds(), tasks(), threading.active_count()
    started_s = time.monotonic()
    await run(CYCLES, early_every=4)  # every fourth client leaves before connecting
    elapsed_s = time.monotonic() - started_s
    await settle(server, fds, task_count, threads)
    settled_s = time.monotonic() - started_s - elapsed_s
    print(f"{CYCLES} cycles in {elapsed_s:.1f} s, settled {settled_s:.1f} s later")
    listing = await (await http.get(server.make_url("/api/v3/streams"))).json()
    assert listing["streams"] == []
