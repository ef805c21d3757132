"""Shared fixtures: a real server on a free port (in-process or as a subprocess), uvloop, CI rules."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp.test_utils import TestServer

from server.app import make_app
from server.config import Config
from tests.redis_server import module_redis, redis_server  # noqa: F401 - fixtures of the Redis tests

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# An async test's body fails with TimeoutError (its traceback shows what it waited for) after this long.
# pytest-timeout cannot do it: its SIGALRM handler raises inside uvloop's signal callback, which swallows
# the exception, and the test runs on. Its own limit (pyproject.toml, thread method, longer than this) is
# the backstop for the rest, a sync test or a teardown: it prints every thread's stack and ends the run.
ASYNC_TEST_TIMEOUT_S = 150.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, as the server does."""
    return {"uvloop": uvloop.new_event_loop}


def _bounded(test: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        limit = asyncio.timeout(ASYNC_TEST_TIMEOUT_S)
        try:
            async with limit:
                return await test(*args, **kwargs)
        except TimeoutError as exc:
            if limit.expired():
                raise TimeoutError(f"the test did not finish within {ASYNC_TEST_TIMEOUT_S:g} s "
                                   "(the await it was in is in the traceback above)") from exc
            raise

    return bounded


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test runs under :data:`ASYNC_TEST_TIMEOUT_S`."""
    for item in items:
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test) and not hasattr(test, "hypothesis"):
            item.obj = _bounded(test)  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI nothing may be skipped: a skip (a missing tool) is reported as a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI=true forbids skips): {report.longrepr}"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Embedded defaults on a free port with a private data directory."""
    return Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", workers=2)


StartServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def start_server(config: Config) -> AsyncIterator[StartServer]:
    """Start a real in-process server on a free port: ``await start_server(max_streams=2)``."""
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> TestServer:
        server = TestServer(make_app(config.replace(**overrides)), host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def server(start_server: StartServer) -> TestServer:
    """One real server with the test's defaults."""
    return await start_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class ServerProcess:
    """``python run.py`` (or another ``command`` that serves) in its own process, stopped by its pid."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, command: list[str] | None = None,
                 cwd: Path = REPO) -> None:
        self.args = args
        self.prefix = prefix or []  # a command that runs the server, e.g. ["taskset", "-c", "0"]
        self.command = command or [sys.executable, str(REPO / "run.py")]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: collections.deque[str] = collections.deque(maxlen=500)  # the latest lines, for debugging
        self._drain: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [*self.prefix, *self.command, *self.args],
            cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its own process group: teardown can stop the pool it leaves behind
        )
        assert self.proc.stdout is not None
        lines: list[str] = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith("serving on "):
                self.url = line.split()[-1].strip()
                # Keep reading: a full, unread pipe would block the server's logging and stall it.
                self._drain = threading.Thread(target=self._read_output, daemon=True)
                self._drain.start()
                return self
            if len(lines) > 500:
                break
        raise RuntimeError("server did not start:\n" + "".join(lines))

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe closed under us
            for line in self.proc.stdout:
                self.output.append(line)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def signal_group(self, sig: int) -> None:
        """``sig`` to the server and everything it started, as systemd, ``timeout`` or a terminal's ^C do."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)  # the server leads its own group (start_new_session)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        if self.proc is not None:
            # A server killed with SIGKILL leaves its forkserver and pool workers running, holding the
            # output pipe open; stop them through the process group the server led (its pid).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._drain is not None:
            self._drain.join(timeout=5)  # ends at EOF, once the server (and its children) have exited
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``run.py`` as a subprocess on a free port: ``server_process("--workers", "1")``."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, data_dir: Path | None = None,
              prefix: list[str] | None = None) -> ServerProcess:
        base = ["--port", "0", "--data-dir", str(data_dir or tmp_path / "data")]
        proc = ServerProcess([*base, *args], env, prefix).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def run_async(coro: Awaitable[Any]) -> Any:
    """Run a coroutine on a fresh uvloop loop (for synchronous helpers)."""
    return asyncio.run(coro)  # type: ignore[arg-type]
