"""The monitor page in headless Chromium: another client (a Python WebSocket publisher) streams a drum
pattern, and the page picks the stream up by itself, flashes once per onset and logs each one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from testkit import signals
from tests.browser_harness import chromium, wait_until

pytestmark = pytest.mark.browser

SAMPLE_RATE_HZ = 48000
CHUNK_S = 0.02


async def subscribers(http: aiohttp.ClientSession, server: TestServer) -> int:
    async with http.get(server.make_url("/api/v3/streams")) as response:
        body: dict[str, Any] = await response.json()
    return sum(int(stream["subscribers"]) for stream in body["streams"])


async def test_monitor_flashes_for_another_clients_stream(server: TestServer, http: aiohttp.ClientSession,
                                                         tmp_path: Path) -> None:
    signal = signals.drums(sr=SAMPLE_RATE_HZ, duration_s=4.0, seed=21, gap_s=0.3)
    async with chromium(tmp_path / "profile") as session:
        page = session.page
        await page.goto(str(server.make_url("/monitor")))
        assert await page.get_attribute("#state", "data-state") == "idle"

        ws = await http.ws_connect(server.make_url("/api/v3/stream"))
        await ws.send_str(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE_HZ, "channels": 1,
                                      "encoding": "pcm_f32le"}))
        started = json.loads(await ws.receive_str(timeout=30))
        stream_id = started["stream_id"]

        # "Follow the newest stream" is on: the page subscribes without being told the id.
        await page.wait_for_selector("#state[data-state=live]")

        async def watching() -> bool:
            return await subscribers(http, server) == 1

        await wait_until(watching, timeout_s=10)
        assert await page.input_value("#stream") == stream_id

        # The light must actually come on: poll its opacity on every animation frame while audio flows.
        lit = asyncio.ensure_future(page.wait_for_function(
            "parseFloat(getComputedStyle(document.querySelector('#light')).opacity) > 0.3",
            polling="raf", timeout=30000))
        chunk = round(CHUNK_S * SAMPLE_RATE_HZ)
        samples = signal.samples.astype(np.float32)
        for start in range(0, len(samples), chunk):
            await ws.send_bytes(samples[start:start + chunk].tobytes())
            await asyncio.sleep(CHUNK_S / 2)  # twice real time: quick, and still a live stream
        await lit
        await ws.send_str(json.dumps({"type": "stop"}))
        published = []
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] == "onset":
                published.append(event["time"])
        assert len(published) >= len(signal.onsets_s) - 1

        # One flash and one log line per onset the publisher got, with the same times.
        await page.wait_for_selector("#log li.ended")
        flashes = int(await page.get_attribute("#flash", "data-flashes") or 0)
        logged = await page.eval_on_selector_all("#log li.onset",
                                                 "items => items.map(i => Number(i.dataset.time))")
        assert flashes == len(published)
        assert sorted(logged) == pytest.approx(sorted(published))
        assert await page.inner_text("#count") == str(len(published))
        await session.screenshot("monitor")
        session.assert_no_errors()
