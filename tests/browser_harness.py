"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright, with a fake
microphone playing a WAV file, a fresh profile, console errors collected and screenshots kept.

Chromium's fake capture device loops its file and reports 44,100 Hz, 2 channels whatever the file's rate,
so the test files are written at 44.1 kHz stereo and onsets are compared modulo the file's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from playwright.async_api import BrowserContext, ConsoleMessage, Page, ViewportSize, async_playwright

from testkit import signals

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "browser"
FAKE_DEVICE_RATE_HZ = 44100
BASE_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
TIMEOUT_MS = 20000  # generous: the suite may run on a loaded 2-core machine


@dataclass
class Session:
    """One headless Chromium (its own profile) with one page; console errors go to ``errors``."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    async def new_page(self) -> Page:
        page = await self.context.new_page()
        self.watch(page)
        return page

    def assert_no_errors(self, allowed: Sequence[str] = ()) -> None:
        """Fail on any console error or uncaught exception not matching one of the ``allowed`` patterns."""
        unexpected = [e for e in self.errors if not any(re.search(p, e) for p in allowed)]
        assert not unexpected, "errors in the page:\n" + "\n".join(unexpected)

    async def screenshot(self, name: str, page: Page | None = None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await (page or self.page).screenshot(path=str(path), full_page=True)
        return path


@contextlib.asynccontextmanager
async def chromium(profile_dir: Path, *, microphone: Path | None = None,
                   grant_microphone: bool = True) -> AsyncIterator[Session]:
    """Headless Chromium with a fresh profile in ``profile_dir``.

    ``microphone``: a WAV file the fake capture device plays (looped). ``grant_microphone=False`` leaves
    the permission ungranted: headless Chromium then refuses ``getUserMedia`` as a user who says no.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    args = list(BASE_ARGS)
    if microphone is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}"]
        if grant_microphone:
            args.append("--use-fake-ui-for-media-stream")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), headless=True, args=args,
            viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            session = Session(context, page)
            session.watch(page)
            yield session
        finally:
            await context.close()


# --- Test audio ------------------------------------------------------------------------------------------


def drum_loop(path: Path, *, seed: int, duration_s: float = 3.0, gap_s: float = 0.3) -> np.ndarray:
    """Write a seeded drum pattern (kicks, snares, hats) as a 44.1 kHz stereo 16-bit WAV; its onset times.

    The hits end by ``duration_s - 0.3`` s and the rest is silence, so the looped file has no seam.
    """
    signal = signals.drums(sr=FAKE_DEVICE_RATE_HZ, duration_s=duration_s - 0.3, seed=seed, gap_s=gap_s)
    tail = np.zeros(round(0.3 * FAKE_DEVICE_RATE_HZ), dtype=np.float32)
    mono = np.concatenate([signal.samples, tail])
    assert np.max(np.abs(mono)) < 1.0
    sf.write(path, np.stack([mono, mono], axis=1), FAKE_DEVICE_RATE_HZ, subtype="PCM_16")
    return signal.onsets_s


# --- Onsets of a looped file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopMatch:
    shift_s: float  # detected time = true time + shift + k × period, at the first detection
    matched: int  # detections that fall on a true onset
    detections: int
    expected: int  # true onsets from the first to the last matched one
    hit: int  # of those, how many were found

    @property
    def precision(self) -> float:
        return self.matched / max(1, self.detections)

    @property
    def recall(self) -> float:
        return self.hit / max(1, self.expected)


def match_loop(detected: Sequence[float], truth: Sequence[float] | np.ndarray, period_s: float,
               tolerance_s: float) -> LoopMatch:
    """Compare onset times detected from a looped file with the file's own, up to a shift that may drift.

    The starting shift (where in the file the capture started, plus any fixed codec delay) is the one that
    puts the most detections on a true onset. It is then followed from detection to detection, because a
    capture device that repeats or skips a buffer moves the rest of the audio by that much. Each matched
    detection names one occurrence of a true onset (loop number × onsets per loop + index); recall counts
    the occurrences between the first and last matched ones that were found.
    """
    found = np.sort(np.asarray(detected, dtype=np.float64))
    known = np.sort(np.asarray(truth, dtype=np.float64))
    n = len(known)

    def errors(shift: float) -> np.ndarray:
        phase = np.mod(found[:, None] - shift - known[None, :], period_s)
        return np.minimum(phase, period_s - phase).min(axis=1)

    candidates = [float(np.mod(d - k, period_s)) for d in found for k in known]
    first_shift = max(candidates, key=lambda s: (int(np.sum(errors(s) <= tolerance_s)), -s))
    shift = first_shift
    occurrences: list[int] = []
    for d in found:
        offsets = d - shift - known  # how far each true onset (in this loop numbering) lies from d
        cycles = np.round(offsets / period_s)
        residual = offsets - cycles * period_s
        j = int(np.argmin(np.abs(residual)))
        if abs(residual[j]) <= tolerance_s:
            occurrences.append(int(cycles[j]) * n + j)
            shift += float(residual[j])  # follow any drift
    distinct = sorted(set(occurrences))
    expected = distinct[-1] - distinct[0] + 1 if distinct else 0
    return LoopMatch(first_shift, len(occurrences), len(found), expected, len(distinct))


async def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll an async ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value {value!r})")
        await asyncio.sleep(interval_s)
