"""``run.py listen --follow [NAME]`` against a real server: an OSC bridge that survives its publisher
reconnecting (a new stream each time), ignores streams of other names, and ends only on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage

from server.client import Publisher, TransientClient
from testkit import signals
from tests.conftest import REPO, ServerProcess, StartServer
from tests.test_osc_output import OscReceiver

LINE_TIMEOUT_S = 60.0
SAMPLE_RATE = 16000


class Listener:
    """``run.py listen ARGS --format json`` in its own process; stderr read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.notes: list[str] = []

    @classmethod
    async def start(cls, *args: str, env: dict[str, str]) -> Listener:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "run.py"), "listen", *args, "--format", "json", cwd=REPO,
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def note(self, prefix: str) -> str:
        """The next stderr line that starts with ``prefix`` (earlier ones are kept in ``notes``)."""
        assert self.proc.stderr is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stderr.readline(), LINE_TIMEOUT_S)).decode()
            assert line, f"listen ended; it said: {self.notes}"
            self.notes.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")

    async def stop(self) -> tuple[int, list[dict[str, Any]], str]:
        """SIGINT, then its exit code, its JSON events and the rest of stderr."""
        os.kill(self.proc.pid, signal.SIGINT)
        out, err = await asyncio.wait_for(self.proc.communicate(), LINE_TIMEOUT_S)
        assert self.proc.returncode is not None
        return self.proc.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)


async def send(publisher: Publisher, samples: np.ndarray) -> None:
    step = SAMPLE_RATE // 50
    for i in range(0, len(samples), step):
        await publisher.send_audio(samples[i:i + step])
        await asyncio.sleep(0.002)


async def test_follow_by_name_survives_reconnects_and_forwards_to_osc(start_server: StartServer) -> None:
    server = await start_server()
    url = str(server.make_url(""))
    receiver = await OscReceiver.open()
    clicks = signals.clicks(sr=SAMPLE_RATE, duration_s=1.5, seed=3).samples
    listener = await Listener.start("--follow", "kit", "--osc", f"127.0.0.1:{receiver.port}",
                                    env={"TRANSIENT_SERVER": url})
    try:
        assert await listener.note("waiting") == "waiting for a live stream named 'kit'"
        async with TransientClient(url) as client:
            other = await client.publish(SAMPLE_RATE, settings={"name": "drums", "beats": False})
            first = await client.publish(SAMPLE_RATE, settings={"name": "kit", "beats": False})
            assert await listener.note("following") == f"following stream {first.stream_id} (kit)"
            await asyncio.gather(send(first, clicks), send(other, clicks))
            await first.close()  # the browser goes away without `stop`: the stream ends, the bridge stays
            second = await client.publish(SAMPLE_RATE, settings={"name": "kit", "beats": False})  # reconnects
            assert await listener.note("following") == f"following stream {second.stream_id} (kit)"
            await send(second, clicks)
            # A newer stream of the same name while the old one still runs: the bridge moves to it.
            third = await client.publish(SAMPLE_RATE, settings={"name": "kit", "beats": False})
            assert await listener.note("following") == f"following stream {third.stream_id} (kit)"
            await send(third, clicks)
            stops = [await p.stop() for p in (second, third, other)]
            await listener.note("waiting for a live stream named 'kit'")
            assert listener.proc.returncode is None  # still there with nothing to follow
        code, events, err = await listener.stop()
    finally:
        listener.kill()
        receiver.close()
    assert code == 0, err
    assert "Traceback" not in err
    onsets = [e for e in events if e["type"] == "onset"]
    by_stream = {sid: [e for e in onsets if e["stream_id"] == sid]
                 for sid in (first.stream_id, second.stream_id, third.stream_id)}
    assert all(len(found) >= 3 for found in by_stream.values()), {k: len(v) for k, v in by_stream.items()}
    assert len(by_stream[third.stream_id]) == stops[1]["onsets"]
    assert not [e for e in onsets if e["stream_id"] == other.stream_id]  # another name: never followed
    packets = await receiver.take(len(onsets))
    sent = [packet.params for packet in packets if isinstance(packet, OscMessage)]
    assert sent == [[pytest.approx(e["strength"], rel=1e-6), e["stream_id"]] for e in onsets]


@pytest.mark.parametrize("name", [None, "kit"])
async def test_follow_waits_for_the_server_and_a_refused_token_ends_it(
    start_server: StartServer, name: str | None
) -> None:
    server = await start_server(tokens="wall:wall-secret-0002:subscribe")
    url = str(server.make_url(""))
    args = ["--follow"] + ([name] if name else [])
    env = {"TRANSIENT_SERVER": url, "TRANSIENT_TOKEN": "nobody-knows-this-0004"}
    listener = await Listener.start(*args, env=env)
    try:
        await asyncio.wait_for(listener.proc.wait(), LINE_TIMEOUT_S)
        _, err = await listener.proc.communicate()
    finally:
        listener.kill()
    assert listener.proc.returncode == 1
    assert "unauthorized" in err.decode() and "Traceback" not in err.decode()


async def test_follow_waits_through_a_server_restart(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = server_process("--port", str(port))
    url = first.url
    clicks = signals.clicks(sr=SAMPLE_RATE, duration_s=1.0, seed=4).samples
    listener = await Listener.start("--follow", env={"TRANSIENT_SERVER": url})
    try:
        async with TransientClient(url) as client:
            publisher = await client.publish(SAMPLE_RATE)
            await listener.note("following")
            await send(publisher, clicks)
            await publisher.stop()
        first.stop()  # SIGTERM: the server goes away
        # A poll that meets the server while it shuts down may see its connection closed unanswered ("hung
        # up"); once it is gone, the listener says it cannot connect, and keeps waiting.
        said = await listener.note("waiting for the server")
        if not said.startswith(f"waiting for the server (cannot connect to {url}"):
            assert said.startswith(f"waiting for the server (the server at {url} hung up"), said
            assert (await listener.note("waiting for the server")).startswith(
                f"waiting for the server (cannot connect to {url}")
        second = server_process("--port", str(port))  # back on the same address
        async with TransientClient(url) as client:
            publisher = await client.publish(SAMPLE_RATE)
            assert await listener.note("following") == f"following stream {publisher.stream_id}"
            await send(publisher, clicks)
            await publisher.stop()
        code, events, err = await listener.stop()
        second.stop()
    finally:
        listener.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert len({e["stream_id"] for e in events if e["type"] == "onset"}) == 2  # both servers' streams
