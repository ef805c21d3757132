"""Detector settings as flags, ``--settings key=value``, ``--time-format``, ``stream -q`` and the installed
``transient`` command, each through the real command line (and a real server for ``stream``)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from server.dsp import METHODS, DetectorSettings, detect_onsets
from testkit import signals
from tests.conftest import REPO, ServerProcess, StartServer
from tests.test_cli_analyze import check_csv_rows, run_cli, write_kit

SETTINGS = {"method": "hfc", "threshold": 2.5, "min_interval_ms": 60.0, "silence_db": -50.0}
FLAGS = ["--method", "hfc", "--threshold", "2.5", "--min-interval-ms", "60", "--silence-db", "-50"]


def drums(tmp_path: Path, sample_rate: int = 22050) -> Path:
    path = tmp_path / "drums.wav"
    sf.write(path, signals.drums(sr=sample_rate, duration_s=3.0, seed=12).samples, sample_rate,
             subtype="FLOAT")
    return path


async def test_every_detector_setting_has_a_flag() -> None:
    helps = await asyncio.gather(*(run_cli(command, "--help") for command in ("analyze", "stream")))
    for command, (code, out, _) in zip(("analyze", "stream"), helps, strict=True):
        assert code == 0
        for field in dataclasses.fields(DetectorSettings):
            assert "--" + field.name.replace("_", "-") in out, (command, field.name)
        assert "|".join(METHODS) in out  # the choices come from the detector's own list


async def test_flags_json_and_key_value_settings_give_the_same_analysis(tmp_path: Path) -> None:
    path = drums(tmp_path)
    ways = (FLAGS, ["--settings", json.dumps(SETTINGS)],
            ["--settings", ",".join(f"{k}={v}" for k, v in SETTINGS.items())],
            ["--settings", json.dumps({**SETTINGS, "threshold": 9}), "--threshold", "2.5"],
            [])  # the last: the defaults
    runs = await asyncio.gather(*(run_cli("analyze", str(path), "--format", "json", "-q", *how)
                                  for how in ways))  # separate processes: run them at once
    results = []
    for code, out, err in runs:
        assert code == 0, err
        results.append(json.loads(out))
    *results, default = results
    assert all(result == results[0] for result in results[1:])
    assert {k: results[0]["settings"][k] for k in SETTINGS} == SETTINGS
    assert default["onsets"] != results[0]["onsets"]  # the settings made a difference


async def test_bad_settings_are_one_usage_error_naming_the_way_out(tmp_path: Path) -> None:
    path = drums(tmp_path)
    not_key_value, out_of_range, bad_method = await asyncio.gather(
        run_cli("analyze", str(path), "--settings", "threshold"),
        run_cli("analyze", str(path), "--threshold", "-1"),
        run_cli("analyze", str(path), "--method", "nope"))
    code, out, err = not_key_value
    assert code == 2 and out == ""
    assert "--settings: 'threshold' is not KEY=VALUE" in err and "--threshold 2" in err
    code, _, err = out_of_range
    assert code == 2 and "threshold" in err and "between 0 and 100" in err and "Traceback" not in err
    code, _, err = bad_method
    assert code == 2 and "invalid choice: 'nope'" in err


async def test_time_formats_in_text_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "kit.wav"
    sample_rate = write_kit(path).sample_rate
    formats = ("s", "ms", "samples")
    runs = iter(await asyncio.gather(  # separate processes: run them at once
        run_cli("analyze", str(path), "--format", "json", "-q"),
        *(run_cli("analyze", str(path), "-q", *output, "--time-format", fmt)
          for fmt in formats for output in ([], ["--format", "csv"]))))
    code, out, err = next(runs)
    assert code == 0, err
    result = json.loads(out)
    times = [onset["time"] for onset in result["onsets"]]
    beats = [beat["time"] for beat in result["beats"]]
    assert len(times) >= 4 and len(beats) >= 4

    def as_text(fmt: str, seconds: list[float]) -> list[str]:
        return {"s": [f"{t:.6f}" for t in seconds], "ms": [f"{t * 1000:.3f}" for t in seconds],
                "samples": [str(round(t * sample_rate)) for t in seconds]}[fmt]

    for fmt in formats:
        code, out, err = next(runs)
        assert code == 0, err
        assert [line.split("\t")[0] for line in out.splitlines()] == as_text(fmt, times)
        code, out, err = next(runs)
        assert code == 0, err
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["file", f"time_{fmt}", "strength", "band", "kind", "bar_position", "bpm"]
        check_csv_rows([dict(zip(rows[0], row, strict=True)) for row in rows[1:]], result, f"time_{fmt}",
                       exact=fmt == "s")
        for kind, seconds in (("onset", times), ("beat", beats)):
            column = [float(row[1]) for row in rows[1:] if row[4] == kind]
            assert column == pytest.approx([float(w) for w in as_text(fmt, seconds)],
                                           abs=1e-3 if fmt == "ms" else 1e-6)


async def test_stream_takes_the_flags_and_prints_sample_times_or_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    sample_rate = 22050
    path = drums(tmp_path, sample_rate)
    decoded = sf.read(path, dtype="float32")[0]
    onsets = detect_onsets(decoded, sample_rate, DetectorSettings(**SETTINGS))
    want = [round(o.time * sample_rate) for o in onsets]
    env = {"TRANSIENT_SERVER": str(server.make_url(""))}
    with_flags, quiet = await asyncio.gather(  # two clients at once
        run_cli("stream", str(path), "--speed", "0", "--time-format", "samples", *FLAGS, env=env),
        run_cli("stream", str(path), "--speed", "0", "-q", "--settings", "threshold=2.5", env=env))
    code, out, err = with_flags
    assert code == 0, err
    got = [int(line.split("\t")[0]) for line in out.splitlines()]
    assert len(want) >= 4 and len(got) == len(want)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1
    code, out, err = quiet
    assert code == 0 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("stream ") and lines[-1].startswith("stopped: ") and len(lines) == 2


def test_pip_install_gives_the_transient_command(tmp_path: Path) -> None:
    """``pip install .`` (without dependencies, which the test's interpreter has) installs ``transient``,
    whose ``serve`` serves the browser pages from the installed package, away from the source tree."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "server", source / "server", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "installed"
    # Nothing to fetch (no dependencies, no build isolation): no index, no version check, no network.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, timeout=180)
    command = target / "bin" / "transient"
    env = {**os.environ, "PYTHONPATH": str(target)}
    path = drums(tmp_path)
    subs = ("serve", "analyze", "stream", "listen", "worker")
    commands = [*([str(command), sub, "--help"] for sub in subs),
                [str(command), "analyze", str(path), "-q", "--threshold", "2.5"],
                [sys.executable, "-c", "import server; print(server.__file__)"]]
    # Separate processes: started at once, each waited for by pid.
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for args in commands]
    try:
        *helps, analysed, check = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for sub, proc, (out, err) in zip(subs, procs, helps, strict=False):
        assert proc.returncode == 0, err
        assert out.startswith(f"usage: transient {sub}"), out
    assert procs[-2].returncode == 0, analysed[1]
    assert len(analysed[0].splitlines()) >= 4
    assert check[0].strip() == str(target / "server" / "__init__.py")  # the installed copy ran
    served = ServerProcess(["--port", "0", "--data-dir", str(tmp_path / "data"), "--workers", "1"], env,
                           command=[str(command), "serve"], cwd=tmp_path)
    try:
        served.start()
        for page, name in (("/", "index.html"), ("/monitor", "monitor.html"), ("/js/live.js", "js/live.js")):
            with urllib.request.urlopen(served.url + page, timeout=30) as response:
                assert response.read() == (REPO / "server" / "static" / name).read_bytes(), page
    finally:
        served.stop()


async def test_stream_prints_the_audio_the_server_dropped(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(max_buffer_s=0.05)  # tiny: sent at full speed, audio is dropped
    path = tmp_path / "long.wav"
    sf.write(path, signals.drums(sr=16000, duration_s=20.0, seed=9).samples, 16000)
    env = {"TRANSIENT_SERVER": str(server.make_url(""))}
    code, out, err = await run_cli("stream", str(path), "--speed", "0", "--format", "json",
                                   "--no-flow-control", env=env)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    dropped_s = [e for e in events if e["type"] == "status"][-1]["dropped_s"]
    assert dropped_s > 0 and events[-1] == {**events[-1], "type": "stopped", "dropped_s": dropped_s}
    last = err.strip().splitlines()
    assert last[-2].endswith(f"onsets, {dropped_s:g} s of audio dropped by the server"), last
    assert last[-1].startswith(f"the server dropped {dropped_s:g} s of audio")


async def test_stream_at_full_speed_with_flow_control_loses_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The same tiny buffer and full speed, with flow control (the default for a file): no audio is
    dropped and the onsets are those of the whole file."""
    server = await start_server(max_buffer_s=0.05)
    sample_rate = 16000
    path = tmp_path / "long.wav"
    sf.write(path, signals.drums(sr=sample_rate, duration_s=20.0, seed=9).samples, sample_rate,
             subtype="FLOAT")
    decoded = sf.read(path, dtype="float32")[0]
    want = [o.time for o in detect_onsets(decoded, sample_rate)]
    code, out, err = await run_cli("stream", str(path), "--speed", "0", "--format", "json",
                                   env={"TRANSIENT_SERVER": str(server.make_url(""))})
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert not [e for e in events if e["type"] == "ack"]  # flow control stays inside the client
    assert [e for e in events if e["type"] == "status"][-1]["dropped_s"] == 0
    assert events[-1]["type"] == "stopped" and events[-1]["dropped_s"] == 0
    assert not [e for e in events if e["type"] == "warning"]
    got = [e["time"] for e in events if e["type"] == "onset"]
    assert len(want) >= 40 and len(got) == len(want)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 0.001
    assert "dropped" not in err
