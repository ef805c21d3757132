"""The pages against a server with access tokens, in headless Chromium: the token comes from the page's
address (then removed from it) or the token field, is kept in sessionStorage only, and goes with every
request (WebSocket ``?token=``, HTTP ``Authorization``, the WebRTC offer); refusals are explained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from testkit import signals
from tests.browser_harness import Session, chromium, drum_loop, wait_until
from tests.conftest import StartServer

pytestmark = pytest.mark.browser

OPS, VIEW = "ops-secret-token-1", "viewer-secret-token-2"
TOKENS = f"ops:{OPS}:publish,subscribe,analyse;view:{VIEW}:subscribe"
# What Chromium itself logs for refused requests: the page explains them in its banner.
REFUSALS_LOGGED = [r"status of 40[13]", r"WebSocket connection to .* failed"]


async def streams(http: aiohttp.ClientSession, server: TestServer) -> list[dict[str, Any]]:
    bearer = {"Authorization": f"Bearer {OPS}"}
    async with http.get(server.make_url("/api/v3/streams"), headers=bearer) as resp:
        assert resp.status == 200
        listed: list[dict[str, Any]] = (await resp.json())["streams"]
    return listed


async def use_token(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.press("#token", "Enter")


async def banner_error(page: Page) -> str:
    await page.wait_for_selector("#banner[data-level=error]")
    return await page.inner_text("#banner")


async def stored_token(page: Page) -> str | None:
    """The token in sessionStorage; it is never in localStorage."""
    session_token: str | None = await page.evaluate("sessionStorage.getItem('transient.token')")
    local: list[str] = await page.evaluate("Object.keys(localStorage).map(k => k + '=' + localStorage[k])")
    assert not [item for item in local if "token" in item or (session_token or "-") in item], local
    return session_token


async def run_live(session: Session, http: aiohttp.ClientSession, server: TestServer, transport: str) -> None:
    """Start the microphone, see the stream listed and its onsets on the page, stop it."""
    page = session.page
    await page.click(f"label:has-text('{'WebRTC' if transport == 'webrtc' else 'WebSocket'}')")
    await page.click("#start")
    await page.wait_for_selector("#state[data-state=live]")
    (stream,) = await streams(http, server)
    assert stream["transport"] == transport

    async def onsets_shown() -> bool:
        return bool(await page.locator("#log li.onset").count() >= 2)

    await wait_until(onsets_shown, timeout_s=30)
    await page.click("#start")

    async def gone() -> bool:
        return not await streams(http, server)

    await wait_until(gone, timeout_s=15)


async def test_live_and_upload_pages_with_tokens(start_server: StartServer, http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    server = await start_server(tokens=TOKENS)
    wav = tmp_path / "drums.wav"
    drum_loop(wav, seed=21)
    signal = signals.drums(sr=44100, duration_s=3.0, seed=22, gap_s=0.35)
    audio = tmp_path / "pattern.flac"
    sf.write(audio, signal.samples, signal.sample_rate)
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        page = session.page

        # No token: the live page says that one is needed, and where it goes.
        await page.goto(str(server.make_url("/")))
        await page.click("#start")
        assert "needs an access token" in await banner_error(page)
        assert await page.get_attribute("#state", "data-state") == "error"
        assert "needed" in (await page.get_attribute("#token-form", "class") or "")

        # ?token= in the address: taken, gone from the address bar, kept for this tab only.
        await page.goto(str(server.make_url("/").with_query(token=OPS)))
        await page.wait_for_function("window.location.search === ''")
        assert OPS not in page.url and OPS not in await page.evaluate("history.state || ''")
        assert await stored_token(page) == OPS
        assert await page.input_value("#token") == OPS

        # With it the live page streams over a WebSocket; its monitor link opens a tab that has it too.
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=live]")
        async with session.context.expect_page() as opened:
            await page.click("#monitor-link")
        monitor = await opened.value
        session.watch(monitor)
        await monitor.wait_for_selector("#state[data-state=live]")
        await monitor.close()
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=idle]")
        await run_live(session, http, server, "websocket")
        await run_live(session, http, server, "webrtc")  # the offer POST carries the header

        # A token without the `publish` right: refused, and the page says why (WebSocket and WebRTC).
        await use_token(page, VIEW)
        assert await stored_token(page) == VIEW
        for transport in ("WebSocket", "WebRTC"):
            await page.click(f"label:has-text('{transport}')")
            await page.click("#start")
            text = await banner_error(page)
            assert "does not allow" in text and "publish" in text, (transport, text)
        assert await streams(http, server) == []

        # The upload page, same tab: the stored token (no `analyse` right) is refused and explained; with
        # a token typed into the field the file is analysed; an unknown token is explained too.
        await page.goto(str(server.make_url("/upload")))
        assert await page.input_value("#token") == VIEW
        await page.set_input_files("#file", str(audio))
        text = await banner_error(page)
        assert "does not allow" in text and "analyse" in text, text
        await use_token(page, OPS)
        await page.click("#again")
        await page.wait_for_selector("#result[data-ready=true]")
        assert await page.locator("#onsets tr").count() == len(signal.onsets_s)
        await use_token(page, "not-a-known-token")
        await page.click("#again")
        assert "not accepted" in await banner_error(page)
        assert await stored_token(page) == "not-a-known-token"
        await session.screenshot("tokens-upload-refused")
        session.assert_no_errors(allowed=REFUSALS_LOGGED)
