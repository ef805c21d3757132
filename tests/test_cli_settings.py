"""Detector settings as flags, ``--settings key=value``, ``--time-format``, ``stream -q`` and the installed
``transient`` command, each through the real command line (and a real server for ``stream``)."""

from __future__ import annotations

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
from tests.test_cli_analyze import run_cli

SETTINGS = {"method": "hfc", "threshold": 2.5, "min_interval_ms": 60.0, "silence_db": -50.0}
FLAGS = ["--method", "hfc", "--threshold", "2.5", "--min-interval-ms", "60", "--silence-db", "-50"]


def drums(tmp_path: Path, sample_rate: int = 22050) -> Path:
    path = tmp_path / "drums.wav"
    sf.write(path, signals.drums(sr=sample_rate, duration_s=3.0, seed=12).samples, sample_rate,
             subtype="FLOAT")
    return path


async def test_every_detector_setting_has_a_flag() -> None:
    for command in ("analyze", "stream"):
        code, out, _ = await run_cli(command, "--help")
        assert code == 0
        for field in dataclasses.fields(DetectorSettings):
            assert "--" + field.name.replace("_", "-") in out, (command, field.name)
        assert "|".join(METHODS) in out  # the choices come from the detector's own list


async def test_flags_json_and_key_value_settings_give_the_same_analysis(tmp_path: Path) -> None:
    path = drums(tmp_path)
    results = []
    for how in (FLAGS, ["--settings", json.dumps(SETTINGS)],
                ["--settings", ",".join(f"{k}={v}" for k, v in SETTINGS.items())],
                ["--settings", json.dumps({**SETTINGS, "threshold": 9}), "--threshold", "2.5"]):
        code, out, err = await run_cli("analyze", str(path), "--format", "json", "-q", *how)
        assert code == 0, err
        results.append(json.loads(out))
    assert all(result == results[0] for result in results[1:])
    assert {k: results[0]["settings"][k] for k in SETTINGS} == SETTINGS
    default = json.loads((await run_cli("analyze", str(path), "--format", "json", "-q"))[1])
    assert default["onsets"] != results[0]["onsets"]  # the settings made a difference


async def test_bad_settings_are_one_usage_error_naming_the_way_out(tmp_path: Path) -> None:
    path = drums(tmp_path)
    code, out, err = await run_cli("analyze", str(path), "--settings", "threshold")
    assert code == 2 and out == ""
    assert "--settings: 'threshold' is not KEY=VALUE" in err and "--threshold 2" in err
    code, _, err = await run_cli("analyze", str(path), "--threshold", "-1")
    assert code == 2 and "threshold" in err and "between 0 and 100" in err and "Traceback" not in err
    code, _, err = await run_cli("analyze", str(path), "--method", "nope")
    assert code == 2 and "invalid choice: 'nope'" in err


async def test_time_formats_in_text_and_csv(tmp_path: Path) -> None:
    sample_rate = 22050
    path = drums(tmp_path, sample_rate)
    code, out, _ = await run_cli("analyze", str(path), "--format", "json", "-q")
    times = [onset["time"] for onset in json.loads(out)["onsets"]]
    assert len(times) >= 4
    for fmt, want in (("s", [f"{t:.6f}" for t in times]), ("ms", [f"{t * 1000:.3f}" for t in times]),
                      ("samples", [str(round(t * sample_rate)) for t in times])):
        code, out, err = await run_cli("analyze", str(path), "-q", "--time-format", fmt)
        assert code == 0, err
        assert [line.split("\t")[0] for line in out.splitlines()] == want
        code, out, err = await run_cli("analyze", str(path), "-q", "--format", "csv", "--time-format", fmt)
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["file", f"time_{fmt}", "strength", "band"]
        column = [float(row[1]) for row in rows[1:]]
        assert column == pytest.approx([float(w) for w in want], abs=1e-3 if fmt == "ms" else 1e-6)


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
    code, out, err = await run_cli("stream", str(path), "--speed", "0", "--time-format", "samples", *FLAGS,
                                   env=env)
    assert code == 0, err
    got = [int(line.split("\t")[0]) for line in out.splitlines()]
    assert len(want) >= 4 and len(got) == len(want)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1
    code, out, err = await run_cli("stream", str(path), "--speed", "0", "-q", "--settings", "threshold=2.5",
                                   env=env)
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
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=180)
    command = target / "bin" / "transient"
    env = {**os.environ, "PYTHONPATH": str(target)}
    for sub in ("serve", "analyze", "stream", "listen", "worker"):
        done = subprocess.run([str(command), sub, "--help"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: transient {sub}"), done.stdout
    path = drums(tmp_path)
    done = subprocess.run([str(command), "analyze", str(path), "-q", "--threshold", "2.5"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) >= 4
    check = subprocess.run([sys.executable, "-c", "import server; print(server.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == str(target / "server" / "__init__.py")  # the installed copy ran
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
