"""The pages tell the truth, in headless Chromium against a real server: Live and Monitor show the same onset
at the same, labelled stream time; Monitor's counter is the stream's count even when opened late; the Live
pill stops saying "Live" as soon as the server announces its shutdown; an out-of-range threshold is shown
as an error and not sent; WebRTC is labelled with the rate it is analysed at; full-screen Monitor shows only
the flash."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.browser_harness import chromium, drum_loop, wait_until
from tests.conftest import StartServer
from tests.stream_client import listed_streams as streams

pytestmark = pytest.mark.browser


async def test_live_and_monitor_agree_on_times_and_counts(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=21)
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        live = session.page
        await live.goto(str(server.make_url("/")))
        await live.click("#start")
        await live.wait_for_selector("#state[data-state=live]")
        await live.wait_for_function("document.querySelectorAll('#log li.onset').length >= 4")

        # The monitor opens late: its big counter still shows the stream's count, not its own.
        monitor = await session.new_page()
        await monitor.goto(str(server.make_url("/monitor")))
        await monitor.wait_for_selector("#state[data-state=live]")
        await monitor.wait_for_function("document.querySelectorAll('#log li.onset').length >= 3")
        assert int(await monitor.inner_text("#count")) >= 4 + 3

        # Stop: both pages end with the same count as the stream.
        await live.click("#start")
        await live.wait_for_selector("#log li.info:has-text('onsets in')")
        detail = await live.eval_on_selector("#log li.info:has-text('onsets in')",
                                             "item => item.lastElementChild.textContent")
        total = int(detail.split()[0])  # "N onsets in D s": the stream's `stopped` count
        await monitor.wait_for_selector("#log li:has-text('stream ended')")
        assert int(await monitor.inner_text("#count")) == total
        assert await live.inner_text("#stat-count") == str(total)

        # The same onset shows the same time on both pages: the stream's time, labelled as such.
        live_times = await live.eval_on_selector_all(
            "#log li.onset",
            "items => items.map(i => [i.dataset.streamTime, i.firstElementChild.textContent])")
        monitor_times = await monitor.eval_on_selector_all(
            "#log li.onset", "items => items.map(i => [i.dataset.time, i.firstElementChild.textContent])")
        shown_live = {stream_time: text for stream_time, text in live_times}
        common = [(text, shown_live[t]) for t, text in monitor_times if t in shown_live]
        assert len(common) >= 3
        assert all(on_monitor == on_live for on_monitor, on_live in common), common
        for page in (live, monitor):
            assert "since the stream's first sample" in (await page.text_content("h2 .time-base") or "")
        session.assert_no_errors()


async def test_live_pill_leaves_live_when_the_server_announces_shutdown(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=22)
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        page = session.page
        await page.goto(str(server.make_url("/")))
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=live]")
        await page.evaluate("""() => {
            window.pillTexts = [];
            new MutationObserver(() => window.pillTexts.push(document.querySelector('#state').textContent))
                .observe(document.querySelector('#state'),
                         { childList: true, characterData: true, subtree: true, attributes: true });
        }""")
        await server.app.shutdown()  # what SIGTERM does first: streams get `error` `shutdown`
        await page.wait_for_function("window.pillTexts.includes('Server stopping')")
        texts: list[str] = await page.evaluate("window.pillTexts")
        assert texts[0] == "Server stopping", texts  # the first change, before the socket closes
        assert await page.get_attribute("#state", "data-state") != "live"
        assert "shutting down" in await page.inner_text("#banner")
        session.assert_no_errors(allowed=["WebSocket"])


async def test_an_out_of_range_threshold_is_shown_not_sent(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=23)
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        page = session.page
        await page.goto(str(server.make_url("/")))
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=live]")
        box = page.locator("input[aria-label='Threshold value']")
        await box.fill("-1")
        await box.press("Enter")
        error = page.locator("[data-error-for=threshold]")
        await error.wait_for(state="visible")
        assert "Threshold must be between 0.05 and 50; still 1.00" in await error.inner_text()
        assert await box.get_attribute("aria-invalid") == "true"
        await page.wait_for_timeout(500)  # longer than the panel's debounce: nothing may have been sent
        (stream,) = await streams(http, server)
        assert stream["settings"]["threshold"] == 1.0
        # A valid value clears the error and is applied.
        await box.fill("2")
        await box.press("Enter")
        await error.wait_for(state="hidden")

        async def applied() -> bool:
            (current,) = await streams(http, server)
            return bool(current["settings"]["threshold"] == 2.0)

        await wait_until(applied, timeout_s=10)
        await page.click("#start")
        session.assert_no_errors()


async def test_webrtc_is_labelled_with_the_rate_it_is_analysed_at(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=24)  # 44.1 kHz: the microphone's rate differs from WebRTC's 48 kHz
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        page = session.page
        await page.goto(str(server.make_url("/")))
        await page.click("label:has-text('WebRTC')")
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=live]")
        (stream,) = await streams(http, server)
        assert stream["sample_rate"] == 48000
        assert (await page.inner_text("#format")).startswith("48.0 kHz · webrtc")
        assert "microphone at 44.1 kHz" in (await page.get_attribute("#format", "title") or "")
        await page.click("#start")
        session.assert_no_errors()


async def test_full_screen_monitor_shows_only_the_flash(server: TestServer, tmp_path: Path) -> None:
    async with chromium(tmp_path / "profile") as session:
        page = session.page
        await page.goto(str(server.make_url("/monitor")))
        assert await page.is_visible("#fullscreen") and await page.is_visible("#count")
        await page.click("#fullscreen")
        await page.wait_for_function("document.fullscreenElement?.id === 'flash'")
        assert await page.is_hidden("#fullscreen")
        assert await page.is_hidden("#count") and await page.is_hidden("#flash-label")
        await page.keyboard.press("f")
        await page.wait_for_function("!document.fullscreenElement")
        assert await page.is_visible("#fullscreen") and await page.is_visible("#count")
        session.assert_no_errors()
