"""The upload page in headless Chromium: a file of known onsets goes up with progress, the page shows the
server's result (table, waveform, markers), plays from a clicked point, and downloads JSON and CSV; a file
that is not audio gets the server's explanation."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from testkit import signals
from tests.browser_harness import chromium
from tests.test_cli_analyze import CSV_HEADER, check_csv_rows, check_known_beats, run_cli, write_kit

pytestmark = pytest.mark.browser

TOLERANCE_S = 0.02


async def test_upload_page_shows_plays_and_downloads_the_onsets(server: TestServer, tmp_path: Path) -> None:
    signal = signals.drums(sr=44100, duration_s=5.0, seed=31, gap_s=0.35)
    audio = tmp_path / "pattern.flac"
    sf.write(audio, signal.samples, signal.sample_rate)
    async with chromium(tmp_path / "profile") as session:
        page = session.page
        follows: list[str] = []
        page.on("request", lambda request: follows.append(request.url) if "/api/v3/analysis/" in request.url
                else None)
        await page.goto(str(server.make_url("/upload")))
        await page.set_input_files("#file", str(audio))
        await page.wait_for_selector("#result[data-ready=true]")
        # The task is followed with GETs that wait for it to finish (answered at once when it does).
        assert follows and all("?wait_s=" in url for url in follows), follows

        # Both bars completed; the table lists the file's onsets.
        assert "done" in await page.inner_text("#analysis-progress output")
        assert await page.inner_text("#upload-progress output") == "100 %"
        times = [float(t) for t in await page.eval_on_selector_all(
            "#onsets tr", "rows => rows.map(row => row.dataset.time)")]
        assert len(times) == len(signal.onsets_s)
        assert np.max(np.abs(np.asarray(times) - signal.onsets_s)) <= TOLERANCE_S
        summary = await page.inner_text("#summary")
        assert f"{len(times)} onsets" in summary and "44.1 kHz" in summary and "0:05.000" in summary

        # The browser decoded the file: a waveform is drawn, so the canvas is not blank.
        assert await page.is_hidden("#decode-note")
        drawn = await page.evaluate("""() => {
            const c = document.querySelector('#wave');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let lit = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i + 2] > 200) lit += 1;
            return lit;
        }""")
        assert drawn > 1000

        # A click at 60 % of the waveform plays from 60 % of the file.
        box = await page.locator("#wave").bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + box["height"] / 2)
        await page.wait_for_selector("#play:has-text('Pause')")
        position = await page.inner_text("#position")
        assert position.startswith("0:03.") or position.startswith("0:02.9"), position
        await session.screenshot("upload")
        await page.click("#play")

        # The downloads hold exactly what the page shows.
        async with page.expect_download() as json_download:
            await page.click("#download-json")
        download = await json_download.value
        assert download.suggested_filename == "pattern.onsets.json"
        result: dict[str, Any] = json.loads(Path(await download.path()).read_text())
        assert result["file"] == "pattern.flac"
        assert [o["time"] for o in result["onsets"]] == pytest.approx(times)
        assert result["sample_rate"] == 44100

        async with page.expect_download() as csv_download:
            await page.click("#download-csv")
        download = await csv_download.value
        text = Path(await download.path()).read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        onset_rows = [r for r in rows if r["kind"] == "onset"]
        assert [float(r["time_s"]) for r in onset_rows] == pytest.approx(times, abs=1e-6)
        strengths = [o["strength"] for o in result["onsets"]]
        assert [float(r["strength"]) for r in onset_rows] == strengths  # exact
        assert {r["file"] for r in rows} == {"pattern.flac"}
        # The same header, and the same exact numbers, as the command line's CSV of the same file.
        code, out, err = await run_cli("analyze", str(audio), "--format", "csv", "-q")
        assert code == 0, err
        assert text.splitlines()[0] == out.splitlines()[0] == ",".join(CSV_HEADER)
        cli_rows = list(csv.DictReader(io.StringIO(out)))
        bands = [o["band"] for o in result["onsets"]]
        cli_onset_rows = [r for r in cli_rows if r["kind"] == "onset"]
        assert [r["band"] for r in onset_rows] == bands == [r["band"] for r in cli_onset_rows]
        assert [(float(r["time_s"]), float(r["strength"])) for r in cli_onset_rows] == \
            [(float(r["time_s"]), float(r["strength"])) for r in onset_rows]
        assert strengths == [float(r["strength"]) for r in cli_onset_rows]
        check_csv_rows(rows, result)
        check_csv_rows(cli_rows, result)

        # A drum kit with known beats: the CSV download holds the result's beats among the onsets, in time
        # order, with the same rows and exact numbers as the command line's CSV.
        kit = tmp_path / "kit.wav"
        track = write_kit(kit)
        await page.set_input_files("#file", str(kit))
        await page.wait_for_function(
            "() => document.querySelector('#summary').textContent.startsWith('kit.wav')")
        async with page.expect_download() as json_download:
            await page.click("#download-json")
        kit_result = json.loads(Path(await (await json_download.value).path()).read_text())
        async with page.expect_download() as csv_download:
            await page.click("#download-csv")
        download = await csv_download.value
        assert download.suggested_filename == "kit.onsets.csv"
        text = Path(await download.path()).read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert text.splitlines()[0] == ",".join(CSV_HEADER)
        assert {r["file"] for r in rows} == {"kit.wav"}
        check_csv_rows(rows, kit_result)
        beat_rows = [r for r in rows if r["kind"] == "beat"]
        check_known_beats([float(r["time_s"]) for r in beat_rows], kit_result["tempo_bpm"], track)
        code, out, err = await run_cli("analyze", str(kit), "--format", "csv", "-q")
        assert code == 0, err

        def values(row: dict[str, str]) -> tuple[Any, ...]:
            return tuple(float(v) if k in ("time_s", "strength", "bpm") and v else v
                         for k, v in row.items() if k != "file")

        assert [values(r) for r in csv.DictReader(io.StringIO(out))] == [values(r) for r in rows]

        # Not audio: the task fails and the page says why, in the server's words.
        junk = tmp_path / "notes.wav"
        junk.write_text("these are not samples\n" * 50)
        await page.set_input_files("#file", str(junk))
        await page.wait_for_selector("#banner[data-level=error]")
        assert "could not be analysed" in await page.inner_text("#banner")
        assert await page.get_attribute("#state", "data-state") == "error"
        assert await page.inner_text("#analysis-progress output") == "failed"  # not "queued"
        assert await page.is_hidden("#result")
        session.assert_no_errors()
