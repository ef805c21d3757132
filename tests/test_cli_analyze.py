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

import aiohttp
import soundfile as sf

from server.cli.analyze import analyse_file
from server.client import TransientClient
from server.dsp import DetectorSettings
from testkit import signals
from tests.conftest import REPO, StartServer

CLI_TIMEOUT_S = 120.0


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
    wav = tmp_path / "clicks.wav"
    sf.write(wav, signals.clicks(sr=16000, duration_s=2.0, seed=4).samples, 16000)
    missing, text = tmp_path / "missing.wav", tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 40)
    result = analyse_file(wav, DetectorSettings())  # what the JSON output holds (tested above)
    code, out, err = await run_cli("analyze", str(wav), str(missing), str(text), "-o",
                                   str(tmp_path / "onsets.csv"), "-q")
    assert code == 1  # some files failed; the others are still written
    assert f"{missing}: not_found" in err and f"{text}: not_audio" in err
    rows = list(csv.reader(io.StringIO((tmp_path / "onsets.csv").read_text())))
    assert rows[0] == ["file", "time_s", "strength", "band"]
    assert [(float(t), float(s), b) for _, t, s, b in rows[1:]] == \
        [(o["time"], o["strength"], o["band"]) for o in result["onsets"]]  # repr floats: exact
    assert {f for f, _, _, _ in rows[1:]} == {str(wav)}
    assert {b for _, _, _, b in rows[1:]} <= {"low", "mid", "high"}
    assert "beats" in result and "tempo_bpm" in result

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
