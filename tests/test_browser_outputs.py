"""The live page's outputs in headless Chromium: the server's configured OSC targets are offered as
checkboxes; a ticked one receives the stream's onsets from the server (a real UDP receiver), unticking it
reconfigures the running stream; the stream name reaches the stream listing. A server without targets says
so. ``GET /api/v3/osc/targets`` lists names only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from pythonosc.osc_message import OscMessage

from tests.browser_harness import chromium, drum_loop, wait_until
from tests.conftest import StartServer
from tests.stream_client import listed_streams as streams
from tests.test_osc_output import OscReceiver

pytestmark = pytest.mark.browser


async def test_osc_targets_endpoint_lists_names_not_addresses(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(osc_targets="video=10.0.0.7:7000/bundle+50,lights=10.0.0.5:9000")
    async with http.get(server.make_url("/api/v3/osc/targets")) as response:
        assert response.status == 200
        body = await response.json()
    assert body == {"targets": [{"name": "lights", "bundle": False, "delay_ms": 0.0},
                                {"name": "video", "bundle": True, "delay_ms": 50.0}]}
    empty = await start_server()
    async with http.get(empty.make_url("/api/v3/osc/targets")) as response:
        assert await response.json() == {"targets": []}


async def test_live_page_opts_its_stream_into_an_osc_target(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    receiver = await OscReceiver.open()
    server = await start_server(osc_targets=f"lights=127.0.0.1:{receiver.port},video=127.0.0.1:9")
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=7)
    try:
        async with chromium(tmp_path / "profile", microphone=wav) as session:
            page = session.page
            await page.goto(str(server.make_url("/")))
            await page.check("input[data-osc-target=lights]")
            assert not await page.is_checked("input[data-osc-target=video]")
            await page.fill("#stream-name", "stage")
            await page.press("#stream-name", "Tab")
            await page.click("#start")
            await page.wait_for_selector("#state[data-state=live]")
            (stream,) = await streams(http, server)
            assert stream["settings"]["osc"] == ["lights"] and stream["settings"]["name"] == "stage"

            # The server sends the page's onsets to the ticked target: no terminal involved.
            packets = await receiver.take(3, timeout_s=30)
            for packet in packets:  # an onset's /onset, then /onset/BAND; maybe a /beat and /tempo
                assert isinstance(packet, OscMessage) and packet.address.startswith("/transient/")
                assert packet.params[-1] == stream["stream_id"]
            assert packets[0].address == "/transient/onset"
            await session.screenshot("live-outputs")

            # Unticking reconfigures the running stream.
            await page.uncheck("input[data-osc-target=lights]")

            async def opted_out() -> bool:
                (current,) = await streams(http, server)
                return current["settings"]["osc"] == []

            await wait_until(opted_out, timeout_s=10)
            await page.click("#start")
            await page.wait_for_selector("#log li.info:has-text('onsets in')")

            # The choice and the name are remembered for the next visit.
            await page.reload()
            await page.wait_for_selector("input[data-osc-target=lights]")
            assert not await page.is_checked("input[data-osc-target=lights]")
            assert await page.input_value("#stream-name") == "stage"
            session.assert_no_errors()
    finally:
        receiver.close()
        await asyncio.sleep(0.01)


async def test_live_page_says_when_the_server_has_no_osc_targets(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    async with chromium(tmp_path / "profile") as session:
        await session.page.goto(str(server.make_url("/")))
        await session.page.wait_for_selector("#osc-hint:has-text('no OSC targets configured')")
        assert await session.page.locator("#osc-targets input").count() == 0
        session.assert_no_errors()
