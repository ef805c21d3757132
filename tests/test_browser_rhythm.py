"""Beats, tempo and drum bands on the pages, in headless Chromium: a drum track at a known tempo streams to a
real server, and the monitor (a Python publisher's stream) and the live page (a fake microphone) show its
BPM, pulse a beat indicator, colour each onset by its band, and on the monitor flash each band's light."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from testkit.rhythm_signals import beat_times, drum_track
from tests.browser_harness import FAKE_DEVICE_RATE_HZ, chromium

pytestmark = pytest.mark.browser

BPM = 120.0
CHUNK_S = 0.02
BAND_RGB = {"low": "rgb(255, 79, 109)", "mid": "rgb(62, 207, 142)", "high": "rgb(242, 232, 99)"}  # rhythm.js


def near_bpm(text: str) -> bool:
    try:
        return abs(float(text) / BPM - 1.0) <= 0.04
    except ValueError:
        return False


async def logged_bands(page: Any) -> list[tuple[str, str]]:
    """(data-band, colour of the kind column) of every onset line of the page's log."""
    result: list[tuple[str, str]] = await page.eval_on_selector_all(
        "#log li.onset", "items => items.map(i => [i.dataset.band || '', "
                         "getComputedStyle(i.querySelector('.kind')).color])")
    return result


async def test_monitor_shows_tempo_beats_and_a_flash_per_band(server: TestServer, http: aiohttp.ClientSession,
                                                              tmp_path: Path) -> None:
    track = drum_track(beat_times([(BPM, 14.0)]), seed=81)
    async with chromium(tmp_path / "profile") as session:
        page = session.page
        await page.goto(str(server.make_url("/monitor")))
        assert await page.inner_text("#stat-bpm") == "–"
        ws = await http.ws_connect(server.make_url("/api/v3/stream"))
        await ws.send_str(json.dumps({"type": "start", "sample_rate": track.sample_rate, "channels": 1,
                                      "encoding": "pcm_f32le"}))
        assert json.loads(await ws.receive_str(timeout=30))["type"] == "started"
        await page.wait_for_selector("#state[data-state=live]")
        await asyncio.sleep(1.0)  # the page subscribes (it polls the stream list)

        # Each band's own light must come on while audio flows (polled on every animation frame).
        lit = [asyncio.ensure_future(page.wait_for_function(
            f"parseFloat(getComputedStyle(document.querySelector('#band-{band} .glow')).opacity) > 0.3",
            polling="raf", timeout=60000)) for band in ("low", "mid", "high")]
        chunk = round(CHUNK_S * track.sample_rate)
        for start in range(0, len(track.audio), chunk):
            await ws.send_bytes(track.audio[start:start + chunk].tobytes())
            await asyncio.sleep(CHUNK_S / 2)  # twice real time
        await asyncio.gather(*lit)
        await ws.send_str(json.dumps({"type": "stop"}))
        published: list[dict[str, Any]] = []
        async for message in ws:
            published.append(json.loads(message.data))
        await page.wait_for_selector("#log li.ended")

        beats = [e for e in published if e["type"] == "beat"]
        onsets = [e for e in published if e["type"] == "onset"]
        assert len(beats) >= 10 and all("band" in o for o in onsets)
        assert near_bpm(await page.inner_text("#stat-bpm")), await page.inner_text("#stat-bpm")
        assert int(await page.get_attribute("#beat", "data-beats") or 0) == len(beats)
        assert await page.get_attribute("#beat", "data-bar-position") == str(beats[-1]["bar_position"])
        assert "of the bar" in await page.inner_text("#stat-beat")
        for band in ("low", "mid", "high"):  # one flash per onset of the band
            flashes = int(await page.get_attribute(f"#band-{band}", "data-flashes") or 0)
            assert flashes == sum(o["band"] == band for o in onsets) > 0
        logged = await logged_bands(page)
        assert sorted(band for band, _ in logged) == sorted(o["band"] for o in onsets)
        assert all(colour == BAND_RGB[band] for band, colour in logged)
        await session.screenshot("monitor-rhythm")


def write_loop(path: Path) -> None:
    """16 beats at BPM from t = 0, cut to exactly 8 s, so the fake microphone's loop keeps the beat."""
    track = drum_track(beat_times([(BPM, 8.0)], start_s=0.0), sample_rate=FAKE_DEVICE_RATE_HZ, seed=82)
    mono = track.audio[: round(8.0 * FAKE_DEVICE_RATE_HZ)]
    sf.write(path, np.stack([mono, mono], axis=1), FAKE_DEVICE_RATE_HZ, subtype="PCM_16")


# Records which band colours the scope's onset markers have been drawn in (a fresh marker is opaque).
SEEN_ON_CANVAS = """colours => {
  const canvas = document.querySelector('#scope');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  window.__seen = window.__seen || {};
  for (const [band, rgb] of Object.entries(colours)) {
    if (window.__seen[band]) continue;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] === rgb[0] && data[i + 1] === rgb[1] && data[i + 2] === rgb[2]) {
        window.__seen[band] = true;
        break;
      }
    }
  }
  return Object.keys(window.__seen).length === Object.keys(colours).length;
}"""


async def test_live_page_shows_tempo_and_band_coloured_onsets(server: TestServer, tmp_path: Path) -> None:
    wav = tmp_path / "kit.wav"
    write_loop(wav)
    async with chromium(tmp_path / "profile", microphone=wav) as session:
        page = session.page
        await page.goto(str(server.make_url("/")))
        await page.click("#start")
        await page.wait_for_selector("#state[data-state=live]")
        colours = {"low": [255, 79, 109], "mid": [62, 207, 142], "high": [242, 232, 99]}
        await page.wait_for_function(SEEN_ON_CANVAS, arg=colours, polling="raf", timeout=60000)
        await page.wait_for_function("Number(document.querySelector('#beat').dataset.beats) >= 8",
                                     timeout=60000)
        # The tempo read-out settles on the file's tempo (the fake device repeats or skips a 10 ms buffer
        # now and then under load, so give it a few tries).
        for _ in range(100):
            if near_bpm(await page.inner_text("#stat-bpm")):
                break
            await asyncio.sleep(0.1)
        assert near_bpm(await page.inner_text("#stat-bpm")), await page.inner_text("#stat-bpm")
        logged = await logged_bands(page)
        assert {band for band, _ in logged} == {"low", "mid", "high"}
        assert all(colour == BAND_RGB[band] for band, colour in logged)
        await session.screenshot("live-rhythm")
        session.assert_no_errors()
