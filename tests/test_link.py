"""Ableton Link: the server publishes one stream's tempo and beat phase to a real second Link peer.

Link discovers peers by UDP multicast on every interface, so the server, the peer (``testkit.link_peer``, a
separate process running ``aalink``) and the publishing clients (``run.py stream``) all run inside a network
namespace this test makes, where loopback is the only interface: nothing leaves the machine. It needs root,
``unshare`` and ``nsenter`` (util-linux) and ``ip`` (iproute2); under CI a missing one fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile

from server.events.link import beat_to_force
from testkit.rhythm_signals import beat_times, drum_track
from tests.conftest import REPO, ServerProcess, StartServer
from tests.stream_client import Publisher

FIRST_BPM = 132.0  # stream A; neither the server's opening 120 nor the peer's own 90
SECOND_BPM = 112.0  # stream B, which takes Link over from A (at 100 and 108 the tracker locks to double time)
NAMESPACE_SETUP = ("ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo "
                   "&& echo ready && exec sleep 600")


# --- The phase arithmetic ------------------------------------------------------------------------------

def test_beat_to_force_puts_the_music_beat_on_a_whole_link_beat() -> None:
    # 120 bpm: 0.25 s after the music's beat is half a beat after it.
    assert beat_to_force(10.5, 0.25, 120.0, None) is None  # already in phase
    assert beat_to_force(10.3, 0.25, 120.0, None) == pytest.approx(10.5)
    assert beat_to_force(10.9, 0.25, 120.0, None) == pytest.approx(10.5)  # nearest, not always forward
    assert beat_to_force(10.51, 0.25, 120.0, None) is None  # within the tolerance
    # A known bar position: the music's beat lands on bar beat position - 1 (quantum 4).
    assert beat_to_force(10.5, 0.25, 120.0, 1) == pytest.approx(8.5)  # 8 = 0 mod 4, nearest to 10
    assert beat_to_force(10.5, 0.25, 120.0, 3) is None  # 10 = 2 mod 4
    assert beat_to_force(13.4, 0.0, 120.0, 2) == pytest.approx(13.0)
    assert beat_to_force(0.0, -0.01, 120.0, None) is None  # a beat dated a little after now


# --- Refusals ------------------------------------------------------------------------------------------

async def test_link_option_is_refused_without_a_link_session(start_server: StartServer,
                                                             http: aiohttp.ClientSession) -> None:
    server = await start_server()  # no --link: this test never joins a Link session
    publisher = await Publisher.open(http, server)
    await publisher.send({"type": "start", "sample_rate": 44100, "channels": 1, "encoding": "pcm_f32le",
                          "settings": {"link": True}})
    *replies, closed = await publisher.receive_all()
    assert [r["code"] for r in replies if r["type"] == "error"] == ["bad_settings"]
    assert "link" in replies[0]["message"] and "--link" in replies[0]["message"]
    assert closed["code"] == 1007

    publisher = await Publisher.open(http, server)
    started = await publisher.start(44100)
    assert started["settings"]["link"] is False
    await publisher.send({"type": "configure", "settings": {"link": True}})
    error = await publisher.receive()
    assert error["code"] == "bad_settings" and "--link" in error["message"]
    await publisher.send({"type": "configure", "settings": {"link": "yes"}})
    assert (await publisher.receive())["code"] == "bad_settings"
    await publisher.send({"type": "configure", "settings": {"link": False}})
    assert (await publisher.receive())["type"] == "configured"
    await publisher.stop()
    async with http.get(server.make_url("/api/v3/link")) as response:
        assert response.status == 200
        assert await response.json() == {"enabled": False, "peers": None, "tempo_bpm": None,
                                         "stream_id": None}


# --- A real second peer in a private network namespace -------------------------------------------------

@pytest.fixture
def namespace() -> Iterator[list[str]]:
    """A network namespace with only loopback (multicast routed to it): the command prefix that runs a
    process inside it."""
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"a network namespace needs root and {', '.join(missing) or 'these tools'}")
    holder = subprocess.Popen(["unshare", "-n", "--", "sh", "-c", NAMESPACE_SETUP], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert holder.stdout is not None
    line = holder.stdout.readline()
    if line.strip() != "ready":
        holder.kill()
        _, err = holder.communicate(timeout=10)
        pytest.fail(f"could not make a network namespace: {err}")
    try:
        yield ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)


def write_track(path: Path, bpm: float, seconds: float, seed: int) -> None:
    track = drum_track(beat_times([(bpm, seconds)]), seed=seed)
    soundfile.write(path, track.audio, track.sample_rate, subtype="FLOAT")


def publish(prefix: list[str], url: str, path: Path, link: list[str]) -> subprocess.Popen[str]:
    """``run.py stream`` in real time with the option ``link`` (``link``: the flag or the setting); every
    event as a JSON line on stdout."""
    return subprocess.Popen(
        [*prefix, sys.executable, str(REPO / "run.py"), "stream", str(path), "--server", url, *link,
         "--format", "json", "--speed", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


class Events:
    """A publishing client's events (JSON lines on its stdout), read as they come by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(list(self.events)):
            assert time.monotonic() < deadline and self.proc.poll() is None, "the client did not get there"
            time.sleep(0.05)

    def all(self, timeout_s: float) -> list[dict[str, Any]]:
        self.proc.wait(timeout=timeout_s)  # its stderr is a few lines: the pipe cannot fill
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert self.proc.returncode == 0, err
        return self.events


def link_state(prefix: list[str], url: str) -> dict[str, Any]:
    """``GET /api/v3/link`` from inside the namespace."""
    code = ("import urllib.request; "
            f"print(urllib.request.urlopen({url + '/api/v3/link'!r}, timeout=10).read().decode())")
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          check=True)
    state: dict[str, Any] = json.loads(done.stdout)
    return state


def positioned_beats(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e["type"] == "beat" and "bar_position" in e)


def link_beat_at(samples: list[dict[str, Any]], wall_s: float) -> float:
    """The peer's Link beat at Unix time ``wall_s``, from its first sample at or after it."""
    after = next(s for s in samples if s["wall"] >= wall_s)
    return float(after["beat"] - (after["wall"] - wall_s) * after["tempo"] / 60.0)


def test_a_second_link_peer_follows_the_stream_tempo_and_beat_phase(
    namespace: list[str], server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    # A runs until B has claimed Link (B starts after A's sixth positioned beat, ~7.6 s into A, and its
    # first event came 2 s later at load average 6), then B's 10 s decide the test's length.
    write_track(first, FIRST_BPM, 18.0, seed=61)
    write_track(second, SECOND_BPM, 10.0, seed=62)
    server = server_process("--link", "--workers", "1", prefix=namespace)
    peer_log = tmp_path / "peer.jsonl"  # a file, not a pipe: nobody reads it until the end
    with peer_log.open("w") as log:
        peer = subprocess.Popen([*namespace, sys.executable, "-m", "testkit.link_peer", "60", "90"], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        stream_a = Events(publish(namespace, server.url, first, ["--settings", '{"link": true}']))
        stream_a.wait_for(lambda events: positioned_beats(events) >= 6, 40)  # A alone holds Link until then
        a_state = link_state(namespace, server.url)
        b_from = time.time()
        stream_b = Events(publish(namespace, server.url, second, ["--link"]))  # B claims it: the latest wins
        a_events = stream_a.all(60)
        b_events = stream_b.all(60)
        time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(peer.pid, signal.SIGTERM)
        peer.wait(timeout=15)
    samples = [json.loads(line) for line in peer_log.read_text().splitlines() if line.startswith("{")]

    assert max(s["peers"] for s in samples) >= 1, "the peer never saw the server in the Link session"
    a_beats = [e for e in a_events if e["type"] == "beat" and e["wall_time"] < b_from]
    assert len(a_beats) >= 14, f"stream A gave {len(a_beats)} beats before B started"
    # Tempo: the peer follows A within 3 % from A's fifth beat on (the tracker's first beats' tempo wanders,
    # and Link takes the median of three), until B takes over.
    a_window = [s for s in samples if a_beats[4]["wall_time"] + 0.3 < s["wall"] < b_from]
    assert a_window and all(abs(s["tempo"] / FIRST_BPM - 1.0) <= 0.03 for s in a_window), \
        ([round(b["bpm"], 2) for b in a_beats], sorted({round(s["tempo"], 2) for s in a_window}))
    # Beat phase: each of A's beats from the fifth on falls on a whole
    # Link beat. (Peers share the beat modulo the 4-beat quantum: the peer's count may differ from the
    # server's by a multiple of 4, so only the phase is compared.)
    errors = [link_beat_at(samples, b["wall_time"]) for b in a_beats[4:]]
    off = [abs(e - round(e)) for e in errors]
    assert max(off) <= 0.1, f"Link beat at A's beats: {[round(e, 3) for e in errors]}"
    # Bars: once A's beats carry bar_position, Link's bar (4-beat quantum) starts on A's downbeats: at each
    # positioned beat after the first (which moved it), the Link beat modulo 4 is bar_position - 1.
    positioned = [(b, e) for b, e in zip(a_beats[4:], errors, strict=True) if "bar_position" in b]
    assert len(positioned) >= 4, "A's beats never carried bar_position"
    assert [round(e) % 4 for _, e in positioned[1:]] == [b["bar_position"] - 1 for b, _ in positioned[1:]]

    assert a_state["enabled"] is True and a_state["peers"] >= 1
    assert a_state["stream_id"] == a_events[0]["stream_id"]
    assert abs(a_state["tempo_bpm"] / FIRST_BPM - 1) <= 0.03
    b_id = b_events[0]["stream_id"]
    taken = [e for e in a_events if e["type"] == "warning" and e["code"] == "link_taken"]
    assert len(taken) == 1 and taken[0]["by"] == b_id
    assert not [e for e in b_events if e["type"] == "warning"]
    b_beats = [e for e in b_events if e["type"] == "beat"]
    assert len(b_beats) >= 8, "stream B gave too few beats"
    b_window = [s for s in samples if b_beats[4]["wall_time"] + 0.3 < s["wall"] <= b_beats[-1]["wall_time"]]
    assert b_window and all(abs(s["tempo"] / SECOND_BPM - 1.0) <= 0.03 for s in b_window), \
        ([round(b["bpm"], 2) for b in b_beats], sorted({round(s["tempo"], 2) for s in b_window}))
    b_errors = [link_beat_at(samples, b["wall_time"]) for b in b_beats[4:]]
    assert max(abs(e - round(e)) for e in b_errors) <= 0.1, [
        (round(e, 3), b["time"], b["bpm"]) for e, b in zip(b_errors, b_beats[4:], strict=True)]


def test_link_without_aalink_stops_start_up_with_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "aalink.py").write_text('raise ImportError("no aalink here")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(REPO)])}
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--link", "--port", "0", "--data-dir", str(tmp_path / "data")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "run.py: error: --link needs the Python package aalink (no aalink here)"
