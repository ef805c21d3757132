"""A real ``redis-server`` for the tests, and ``run.py`` processes (instances, workers) that use it.

The server listens on a free loopback port with append-only persistence in a temporary directory and is
stopped, killed or restarted by its pid. Where ``redis-server`` is missing the tests are skipped, which
counts as a failure under CI (see conftest). Fixtures: ``redis_server`` (one per test) and
``module_redis`` (one per test module).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 20.0
PROCESS_START_TIMEOUT_S = 90.0  # a run.py process on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server --bind 127.0.0.1 --port P --save '' --appendonly yes --dir DIR``, by pid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or start again, on the same port and directory, reading back the append-only file)."""
        if not os.path.exists(REDIS_SERVER):
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = (self.directory / "redis.log").read_text()
                raise RuntimeError(f"redis-server did not start:\n{output}")
            time.sleep(0.02)
        return self

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does to the process (acknowledged writes are in the AOF)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class RunPy:
    """``python run.py ARGS`` started at once; :meth:`ready` waits for its ready line; stopped by pid.

    The process leads its own process group (its pid is the group id), so :meth:`kill` takes its pool
    processes down with it, as a crash of the machine would, and :meth:`stop` leaves nothing behind.
    Output is drained by a thread (kept in :attr:`lines`) so a chatty process never blocks on its pipe.
    """

    def __init__(self, args: list[str], marker: str) -> None:
        self.args = args
        self.marker = marker
        self.lines: list[str] = []
        self.value = ""  # what follows the marker on the ready line: the URL, or the worker's name
        self._ready = threading.Event()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        with stdout:  # closed here, by the only reader, once every holder of the pipe is gone
            for line in stdout:
                self.lines.append(line)
                if not self._ready.is_set() and line.startswith(self.marker):
                    self.value = line[len(self.marker):].strip()
                    self._ready.set()
        self._ready.set()

    def ready(self, timeout_s: float = PROCESS_START_TIMEOUT_S) -> RunPy:
        if not self._ready.wait(timeout_s) or not self.value:
            self.stop()
            raise RuntimeError(f"run.py {' '.join(self.args)} did not start:\n" + "".join(self.lines))
        return self

    @property
    def url(self) -> str:
        return self.value

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL to the process and its pool: they die at once, mid-work, cleaning nothing up."""
        self._kill_group()
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL to whatever of its group is left."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self._kill_group()
        self.proc.wait(timeout=15)
        self._reader.join(timeout=5)


def instance(redis_url: str, data_dir: Path, *args: str) -> RunPy:
    """A server instance on Redis (``serving on URL``), started in the background: call ``ready()``."""
    return RunPy(["--port", "0", "--workers", "1", "--data-dir", str(data_dir), "--redis", redis_url,
                  "--log-level", "WARNING", *args], "serving on ")


def worker(redis_url: str, data_dir: Path, *args: str) -> RunPy:
    """A ``run.py worker`` (``worker ready: NAME``), started in the background: call ``ready()``."""
    return RunPy(["worker", "--workers", "1", "--data-dir", str(data_dir), "--redis", redis_url,
                  "--log-level", "WARNING", *args], "worker ready: ")
