"""``run.py stream`` and ``run.py listen`` as subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_bundle import OscBundle

from server.client import TransientClient
from server.dsp import detect_onsets
from testkit import signals
from tests.conftest import REPO, StartServer
from tests.test_cli_analyze import run_cli
from tests.test_osc_output import OscReceiver

TOLERANCE_S = 0.001
STARTUP_TIMEOUT_S = 60.0


def assert_same_times(got: list[float], want: list[float]) -> None:
    assert len(want) >= 4 and len(got) == len(want), (got, want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_stream_publishes_a_file_and_prints_its_onsets(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    signal_ = signals.drums(sr=32000, duration_s=2.5, seed=23)
    path = tmp_path / "drums.flac"
    sf.write(path, signal_.samples, 32000, subtype="PCM_24")
    decoded = sf.read(path, dtype="float32")[0]

    code, out, err = await run_cli("stream", str(path), "--speed", "0", "--format", "json",
                                   env={"TRANSIENT_SERVER": str(server.make_url(""))})
    assert code == 0, err
    events = json_lines(out)
    assert events[-1]["type"] == "stopped"
    onsets = [e for e in events if e["type"] == "onset"]
    assert_same_times([e["time"] for e in onsets], [o.time for o in detect_onsets(decoded, 32000)])
    stream_id = onsets[0]["stream_id"]
    assert f"stream {stream_id}: 32000 Hz, 1 channel(s)" in err
    assert f"stopped: {len(decoded) / 32000:g} s, {len(onsets)} onsets" in err


async def test_stream_sends_raw_pcm_from_stdin_in_real_time(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    sample_rate = 16000
    samples = signals.clicks(sr=sample_rate, duration_s=1.5, seed=6).samples
    stereo = np.stack([samples, samples * 0.5], axis=1)
    pcm = np.round(np.clip(stereo, -1.0, 32767 / 32768) * 32768).astype("<i2")
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, out, err = await run_cli("stream", "-", "--rate", str(sample_rate), "--channels", "2",
                                   "--encoding", "pcm_s16le", "--chunk-ms", "10", "--speed", "2",
                                   "--server", str(server.make_url("")), stdin=pcm.tobytes())
    assert code == 0, err
    assert loop.time() - started >= 1.5 / 2  # paced: twice real time takes at least half the duration
    times = [float(line.split("\t")[0]) for line in out.splitlines()]
    assert_same_times(times, [o.time for o in detect_onsets(pcm, sample_rate)])
    wall_times = [float(line.split("\t")[2]) for line in out.splitlines()]
    assert np.all(np.diff(wall_times) > 0)


async def test_stream_stops_cleanly_on_sigterm(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server()
    path = tmp_path / "long.wav"
    sf.write(path, signals.clicks(sr=16000, duration_s=30.0, seed=2).samples, 16000)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "run.py"), "stream", str(path), "--server", str(server.make_url("")),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    first = await asyncio.wait_for(proc.stderr.readline(), STARTUP_TIMEOUT_S)
    assert first.startswith(b"stream ")
    await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)  # an onset: audio is flowing
    os.kill(proc.pid, signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, err
    summary = err.decode().strip().splitlines()[-1]
    assert summary.startswith("stopped: ")
    duration_s = float(summary.split()[1])
    assert 0 < duration_s < 30.0  # stopped part-way, every received sample analysed


async def test_listen_prints_another_clients_stream_and_forwards_it_to_osc(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    receiver = await OscReceiver.open()
    try:
        await listen_and_check(server.make_url(""), http, receiver)
    finally:
        receiver.close()
        await asyncio.sleep(0.01)  # uvloop closes the UDP handle on the next loop iteration


@dataclass
class Listened:
    """What ``run.py listen`` printed while a client published, and what the publisher itself got."""

    returncode: int | None
    heard: list[dict[str, Any]]  # the listener's JSON lines
    err: str
    stopped: dict[str, Any]  # the publisher's ``stopped``
    events: list[dict[str, Any]]  # the publisher's events


async def listen_while_publishing(client: TransientClient, samples: np.ndarray, sample_rate: int,
                                  args: list[str], env: dict[str, str]) -> Listened:
    """Start ``run.py listen STREAM --format json ARGS`` on a new stream of ``client``, publish
    ``samples`` in 20 ms chunks once it listens, stop, and collect both sides (the listener's by pid)."""
    publisher = await client.publish(sample_rate, settings={"beats": False})  # one OSC message per onset
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "run.py"), "listen", publisher.stream_id, "--format", "json", *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), STARTUP_TIMEOUT_S)
        assert line.decode().strip() == f"listening to stream {publisher.stream_id}"
        step = round(0.02 * sample_rate)
        for i in range(0, len(samples), step):
            await publisher.send_audio(samples[i:i + step])
        stopped = await publisher.stop()
        events = [e async for e in publisher.events()]
        out, err = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    return Listened(proc.returncode, json_lines(out.decode()), err.decode(), stopped, events)


async def listen_and_check(url: Any, http: aiohttp.ClientSession, receiver: OscReceiver) -> None:
    sample_rate = 22050
    samples = signals.drums(sr=sample_rate, duration_s=2.0, seed=31).samples
    async with TransientClient(str(url), session=http) as client:
        listened = await listen_while_publishing(
            client, samples, sample_rate, ["--osc", f"127.0.0.1:{receiver.port}/bundle+20"],
            {**os.environ, "TRANSIENT_SERVER": str(url)})
    assert listened.returncode == 0, listened.err
    heard, events = listened.heard, listened.events
    assert heard[-1]["type"] == "ended" and heard[-1]["onsets"] == listened.stopped["onsets"]
    onsets = [e for e in events if e["type"] == "onset"]
    assert [e for e in heard if e["type"] == "onset"] == onsets
    assert len(onsets) >= 4
    packets = await receiver.take(len(onsets))
    for onset, packet in zip(onsets, packets, strict=True):
        assert isinstance(packet, OscBundle)
        assert packet.num_contents == 1 and packet.content(0).address == "/transient/onset"
        assert packet.content(0).params == [pytest.approx(onset["strength"], rel=1e-6), onset["stream_id"]]
        assert packet.timestamp == pytest.approx(onset["wall_time"] + 0.020, abs=1e-5)
