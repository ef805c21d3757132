"""``run.py analyze`` as a subprocess: its output equals the server's HTTP result for the same file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

from server.cli.analyze import analyse_file, csv_rows
from server.client import TransientClient
from server.dsp import DetectorSettings
from testkit import signals
from testkit.rhythm_signals import DrumTrack, beat_times, drum_track
from tests.conftest import REPO, StartServer

CLI_TIMEOUT_S = 120.0
CSV_HEADER = ["file", "time_s", "strength", "band", "kind", "bar_position", "bpm"]
KIT_BPM = 112.0
BEAT_WINDOW_S = 0.07  # mir_eval's beat tolerance


async def run_cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
                  timeout_s: float = CLI_TIMEOUT_S) -> tuple[int, str, str]:
    """``python run.py ARGS`` in its own process (the test's event loop keeps serving meanwhile);
    its exit code, stdout and stderr. Killed by pid if it outlives ``timeout_s``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "run.py"), *args, cwd=REPO, env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except TimeoutError:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_kit(path: Path) -> DrumTrack:
    """A 10 s drum kit at 112 BPM with known beats and bar positions, written as 16-bit WAV at ``path``."""
    track = drum_track(beat_times([(KIT_BPM, 10.0)]), seed=21)
    sf.write(path, track.audio, track.sample_rate, subtype="PCM_16")
    return track


def check_csv_rows(rows: list[dict[str, str]], result: dict[str, Any], time_column: str = "time_s",
                   exact: bool = True) -> None:
    """One file's CSV rows hold exactly the result's onsets and beats, in the order of the result's times,
    an onset before a beat at the same time (floats compared exactly: both sides write the shortest
    round-trip text; times too when ``exact``, i.e. in seconds)."""
    assert {r["kind"] for r in rows} <= {"onset", "beat"}
    items = sorted([(o["time"], False) for o in result["onsets"]] +
                   [(b["time"], True) for b in result.get("beats", [])])
    assert [r["kind"] == "beat" for r in rows] == [is_beat for _, is_beat in items]

    def time_s(row: dict[str, str]) -> float | None:
        return float(row[time_column]) if exact else None

    onsets = [r for r in rows if r["kind"] == "onset"]
    assert [(time_s(r), float(r["strength"]), r["band"], r["bar_position"], r["bpm"]) for r in onsets] == \
        [(o["time"] if exact else None, o["strength"], o.get("band", ""), "", "") for o in result["onsets"]]
    beats = [r for r in rows if r["kind"] == "beat"]
    assert [(time_s(r), int(r["bar_position"]) if r["bar_position"] else None) for r in beats] == \
        [(b["time"] if exact else None, b.get("bar_position")) for b in result.get("beats", [])]
    assert all(r["strength"] == r["band"] == "" for r in beats)
    tempo = result.get("tempo_bpm")
    assert [r["bpm"] for r in beats] == ["" if tempo is None else repr(tempo)] * len(beats)


def check_known_beats(beat_times_s: list[float], tempo_bpm: float, track: DrumTrack) -> None:
    """The beats are the kit's: every known beat from 2 s on has one within 70 ms, nine in ten of those
    before the music ends are on a known beat, and the tempo is within 4 %."""
    found = np.asarray(beat_times_s)
    assert len(found) >= 12
    for known in track.beats[track.beats >= 2.0]:
        assert np.min(np.abs(found - known)) <= BEAT_WINDOW_S, known
    during = found[found <= track.beats[-1] + BEAT_WINDOW_S]
    on_beat = [np.min(np.abs(track.beats - t)) <= BEAT_WINDOW_S for t in during]
    assert np.mean(on_beat) >= 0.9
    assert abs(tempo_bpm / KIT_BPM - 1.0) <= 0.04


def write_files(tmp_path: Path) -> tuple[Path, Path]:
    signal_ = signals.drums(sr=44100, duration_s=3.0, seed=17)
    wav, mp3 = tmp_path / "drums.wav", tmp_path / "drums.mp3"
    sf.write(wav, signal_.samples, 44100, subtype="PCM_16")
    sf.write(mp3, signal_.samples, 44100, format="MP3")  # decoded through PyAV's packet spool
    return wav, mp3


async def test_cli_output_equals_the_servers_result(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    wav, mp3 = write_files(tmp_path)
    settings = {"threshold": 1.3, "method": "superflux", "min_interval_ms": 50}
    async with TransientClient(str(server.make_url("")), session=http) as client:
        from_server = {path: await client.analyse(path, settings) for path in (wav, mp3)}

    code, out, err = await run_cli("analyze", str(wav), "--format", "json",
                                   "--settings", json.dumps(settings))
    assert code == 0, err
    assert json.loads(out) == from_server[wav]
    assert "100%" in err and str(wav) in err  # the progress bar, on stderr

    output = tmp_path / "both.json"
    code, out, err = await run_cli("analyze", str(wav), str(mp3), "-o", str(output), "-q",
                                   "--settings", json.dumps(settings))
    assert code == 0 and out == "" and err == ""
    files = json.loads(output.read_text())["files"]
    assert files == [{"file": str(wav), "result": from_server[wav]},
                     {"file": str(mp3), "result": from_server[mp3]}]
    assert len(from_server[mp3]["onsets"]) >= 4


async def test_text_and_csv_outputs_and_failures(tmp_path: Path) -> None:
    wav, kit = tmp_path / "clicks.wav", tmp_path / "kit.wav"
    sf.write(wav, signals.clicks(sr=16000, duration_s=2.0, seed=4).samples, 16000)
    track = write_kit(kit)
    missing, text = tmp_path / "missing.wav", tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 40)
    result = analyse_file(wav, DetectorSettings())  # what the JSON output holds (tested above)
    kit_result = analyse_file(kit, DetectorSettings())
    code, out, err = await run_cli("analyze", str(wav), str(missing), str(kit), str(text), "-o",
                                   str(tmp_path / "onsets.csv"), "-q")
    assert code == 1  # some files failed; the others are still written
    assert f"{missing}: not_found" in err and f"{text}: not_audio" in err
    written = (tmp_path / "onsets.csv").read_text()
    assert next(csv.reader(io.StringIO(written))) == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(written)))
    assert list(dict.fromkeys(r["file"] for r in rows)) == [str(wav), str(kit)]  # file by file, in order
    for path, its_result in ((wav, result), (kit, kit_result)):
        check_csv_rows([r for r in rows if r["file"] == str(path)], its_result)
    assert {r["band"] for r in rows if r["kind"] == "onset"} <= {"low", "mid", "high"}
    kit_beats = [r for r in rows if r["file"] == str(kit) and r["kind"] == "beat"]
    check_known_beats([float(r["time_s"]) for r in kit_beats], float(kit_beats[0]["bpm"]), track)
    assert any(r["bar_position"] for r in kit_beats)

    # --no-beats: the same columns, onset rows only, no band.
    code, out, err = await run_cli("analyze", str(kit), "--format", "csv", "-q", "--no-beats")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == CSV_HEADER
    assert [float(r["time_s"]) for r in rows] == [o["time"] for o in kit_result["onsets"]]
    assert {(r["kind"], r["band"], r["bar_position"], r["bpm"]) for r in rows} == {("onset", "", "", "")}

    code, out, _ = await run_cli("analyze", str(wav), "-q")
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(round(o["time"], 6), round(o["strength"], 6), o["band"]) for o in result["onsets"]] == \
        [(float(t), float(s), b) for t, s, b in lines]

    code, out, _ = await run_cli("analyze", str(wav), "-q", "--no-beats")
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(round(o["time"], 6), round(o["strength"], 6)) for o in result["onsets"]] == \
        [(float(t), float(s)) for t, s in lines]

    code, out, err = await run_cli("analyze", str(wav), "--settings", '{"threshold": "loud"}')
    assert code == 2 and "threshold" in err and out == ""


def test_csv_rows_tie_order_and_a_missing_tempo() -> None:
    """An onset and a beat at the same time: the onset first; a result without tempo (one beat) leaves
    ``bpm`` empty; times in samples at the result's rate."""
    result = {"sample_rate": 1000, "onsets": [{"time": 0.5, "strength": 2.0, "band": "low"}],
              "beats": [{"time": 0.5, "bar_position": 1}, {"time": 0.25}], "tempo_bpm": None}
    assert csv_rows("a,b.wav", result, "samples") == [
        ["a,b.wav", "250", "", "", "beat", "", ""],
        ["a,b.wav", "500", "2.0", "low", "onset", "", ""],
        ["a,b.wav", "500", "", "", "beat", "1", ""],
    ]
