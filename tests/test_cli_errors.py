"""The client commands and the server fail with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import soundfile as sf

from testkit import signals
from tests.conftest import REPO, ServerProcess
from tests.test_cli_analyze import run_cli

STARTUP_TIMEOUT_S = 60.0


def one_line(err: str) -> str:
    """The only line of ``err``, which must not hold a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
async def hang_up_server() -> AsyncIterator[str]:
    """A TCP server that accepts each connection and closes it at once: the URL."""
    connections = 0

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()
    assert connections > 0


def drums_file(tmp_path: Path, duration_s: float = 2.0) -> Path:
    path = tmp_path / "drums.wav"
    sf.write(path, signals.drums(sr=16000, duration_s=duration_s, seed=5).samples, 16000)
    return path


@pytest.mark.parametrize("command", ["stream", "listen"])
async def test_a_server_url_without_scheme_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    target = str(drums_file(tmp_path)) if command == "stream" else "some-stream"
    code, out, err = await run_cli(command, target, "--server", "127.0.0.1:8080")
    assert code == 2 and out == ""
    line = one_line(err)
    assert line == (f"run.py {command}: error: --server: '127.0.0.1:8080' is not a server URL: it needs "
                    "http:// or https:// and a host; did you mean http://127.0.0.1:8080?")
    code, _, err = await run_cli(command, target, env={"TRANSIENT_SERVER": "localhost:8080"})
    assert code == 2 and "TRANSIENT_SERVER: 'localhost:8080' is not a server URL" in one_line(err)


async def test_a_server_that_hangs_up_is_one_line_and_exit_1(hang_up_server: str, tmp_path: Path) -> None:
    code, _, err = await run_cli("stream", str(drums_file(tmp_path)), "--server", hang_up_server)
    assert code == 1
    assert one_line(err) == (f"cannot start the stream: the server at {hang_up_server} hung up "
                             "(it closed the connection without answering)")
    code, _, err = await run_cli("listen", "some-stream", "--server", hang_up_server)
    assert code == 1
    assert one_line(err) == (f"cannot subscribe to 'some-stream': the server at {hang_up_server} hung up "
                             "(it closed the connection without answering)")


async def test_nothing_listening_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, _, err = await run_cli("stream", str(drums_file(tmp_path)), "--server", url)
    assert code == 1
    assert one_line(err).startswith(f"cannot start the stream: cannot connect to {url} (connection refused)")


async def test_a_server_killed_mid_stream_is_one_line_and_exit_1(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process()
    path = drums_file(tmp_path, duration_s=30.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "run.py"), "stream", str(path), "-q", "--server", server.url, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        first = (await asyncio.wait_for(proc.stderr.readline(), STARTUP_TIMEOUT_S)).decode()
        assert first.startswith("stream "), first
        await asyncio.sleep(0.5)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # the server and its pool, all at once
        _, err = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 1
    line = one_line(err.decode())
    assert line.startswith(f"the stream ended early: the server at {server.url} hung up"), line


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
async def test_analyze_checks_its_output_path_before_analysing(tmp_path: Path, where: str) -> None:
    output = tmp_path / "no" / "such" / "dir" / "onsets.csv" if where == "missing-dir" else tmp_path
    code, out, err = await run_cli("analyze", str(drums_file(tmp_path)), "-o", str(output))
    assert code == 1 and out == ""
    reason = "No such file or directory" if where == "missing-dir" else "it is a directory"
    # One line and no progress bar: nothing was analysed.
    assert one_line(err) == f"run.py analyze: cannot write {output}: {reason}"


async def test_analyze_output_check_keeps_an_existing_file_until_written(tmp_path: Path) -> None:
    output = tmp_path / "onsets.csv"
    output.write_text("old\n")
    code, _, err = await run_cli("analyze", str(drums_file(tmp_path)), "-o", str(output), "-q")
    assert code == 0, err
    assert output.read_text().startswith("file,time_s,strength,band,kind,bar_position,bpm\n")


async def test_serving_on_a_taken_port_says_how_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_cli("--port", str(port), "--data-dir", str(tmp_path / "data"),
                                       timeout_s=60.0)
    assert code == 1 and "serving on" not in out
    assert one_line(err) == (f"run.py: cannot listen on 127.0.0.1:{port}: the port is already in use "
                             "(another Transient or another program); pick another port with --port N or "
                             "TRANSIENT_PORT=N (make run PORT=N), or --port 0 for any free one")
