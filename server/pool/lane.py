"""One lane of the detection pool: a worker process that the event loop feeds and reads itself.

Calls go to the worker as frames on one pipe and answers come back, in the same order, on another (see
:mod:`server.pool.frames`). Both pipes are asyncio pipe transports of the server's event loop: a call is
pickled and written by the loop, and an answer is read, unpickled and handed to its caller by the loop,
with no thread in between. (A ``concurrent.futures.ProcessPoolExecutor``, which each lane was before,
hands every call and every answer through two threads of its own, and in a busy server each hand-over
waits for the GIL. With 256 live streams the server process used 71-77 % of a core with executors and
55-69 % with these lanes, in ``bench/stream_load.py``; ``bench/pool_rtt.py`` compares one call both ways.)

Large buffers in a call's arguments (a batch's audio) do not go through the pipe: they cross in the lane's
shared memory (:mod:`server.pool.arena`), and the pipe carries only the small pickle.

A worker that dies closes its answer pipe: every call still waiting fails with :class:`LaneBroken` and a
fresh worker is started at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import uvloop

from server.exceptions import TransientError
from server.pool.arena import Arena, SharedFd
from server.pool.frames import HEADER, FrameReader
from server.pool.heap import TRIM_EVERY_S
from server.pool.policy import set_policy
from server.pool.worker import serve

log = logging.getLogger("server.pool")

T = TypeVar("T")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size
# Imported once by the forkserver, so every worker starts with them: the detector, and the modules whose
# functions the server sends (live batches, file jobs; without these a worker's first file job waited
# 0.1-0.3 s for imports such as PyAV), and scipy.signal, which the detector imports only where it filters
# (server.dsp.attack).
FORKSERVER_PRELOAD = ("server.pool.worker", "server.dsp", "server.stream.in_worker", "server.jobs.work",
                      "scipy.signal")
STOP_TIMEOUT_S = 5.0  # a worker that has not exited this long after its call pipe closed is killed


class LaneBroken(TransientError):
    """The lane's worker died before answering."""


class _Worker:
    """A started worker process, its call pipe and the calls it has not answered yet (oldest first), each
    with whether it holds a reservation in the lane's arena."""

    def __init__(self, process: BaseProcess, calls: asyncio.WriteTransport) -> None:
        self.process = process
        self.calls = calls
        self.waiting: deque[tuple[asyncio.Future[Any], bool]] = deque()
        self.alive = True


class _Answers(asyncio.Protocol):
    """The reading end of a worker's answer pipe."""

    def __init__(self, on_answer: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self._frames = FrameReader()
        self._on_answer = on_answer
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        for payload in self._frames.feed(data):
            self._on_answer(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _take_fd(connection: Connection) -> int:
    """The pipe end of ``connection``, now owned by the caller (the connection is closed), made roomy."""
    fd = os.dup(connection.fileno())
    connection.close()
    # A batch of a few hundred streams' audio is a few hundred KiB: with room for it, a call is one write.
    with contextlib.suppress(OSError):  # the system's limit may be lower: the default then serves
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    return fd


def _pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: str) -> Any:
    """``fd`` as the unbuffered file object a pipe transport of ``loop`` takes, so that ``fd`` is closed once.

    uvloop's pipe transports close the fd themselves (libuv) and then close the file object as well; a
    file object that owned the fd would close its number a second time. Meanwhile another thread may have
    been given that number (the executor starting a replacement worker opens pipes), and the second close
    would close that thread's fd instead. asyncio's own transports close only the file object.
    """
    return os.fdopen(fd, mode, buffering=0, closefd=not isinstance(loop, uvloop.Loop))


def _spawn(index: int, arena: Arena, heap_trim_s: float) -> tuple[BaseProcess, int, int]:
    """Start a worker (blocking: run it off the loop); returns it and the server's ends of its pipes."""
    context = multiprocessing.get_context("forkserver")
    # The forkserver (started with the first worker) imports the detector once, so every worker is forked
    # with numpy and scipy loaded rather than importing them itself (~0.7 s of CPU each).
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    calls_out, calls_in = context.Pipe(duplex=False)  # (worker reads, server writes)
    answers_out, answers_in = context.Pipe(duplex=False)  # (server reads, worker writes)
    process = context.Process(target=serve,
                              args=(calls_out, answers_in, os.getpid(), SharedFd(arena.fd), arena.size_bytes,
                                    heap_trim_s),
                              name=f"transient-pool-{index}", daemon=True)
    try:
        process.start()
    finally:
        calls_out.close()
        answers_in.close()
    return process, _take_fd(calls_in), _take_fd(answers_out)


class Lane:
    """One worker process; calls on a lane run one after another, in the order they were made."""

    def __init__(self, index: int, heap_trim_s: float = TRIM_EVERY_S,
                 warm_up: Callable[[], object] | None = None, sched_policy: str = "normal") -> None:
        self.index = index
        self.sched_policy = sched_policy  # its worker's (server.pool.policy)
        self.heap_trim_s = heap_trim_s  # its worker's least interval between heap trims (server.pool.heap)
        self.warm_up = warm_up  # every worker's first call, before any other (a replacement's too)
        self.in_flight = 0
        self.rebuilds = 0
        self._worker: _Worker | None = None
        self._starting: asyncio.Task[_Worker] | None = None
        self._closed = False
        self._arena = Arena()  # outlives a worker that dies: its replacement gets the same one

    def worker_pids(self) -> list[int]:
        worker = self._worker
        return [worker.process.pid] if worker is not None and worker.alive and worker.process.pid else []

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker; raises what it raised, or :class:`LaneBroken` if the worker died."""
        if self._closed:
            raise RuntimeError("the detection pool is closed")
        worker = await self._running()
        if not worker.alive:  # died while this call waited for it to start
            raise LaneBroken(f"detection worker {self.index} died")
        ok, value = await self._send(worker, fn, args)
        if not ok:
            raise value
        return value

    def _send(self, worker: _Worker, fn: Callable[..., Any], args: tuple[Any, ...]
              ) -> asyncio.Future[tuple[bool, Any]]:
        """Write the call to ``worker``; the future gets ``(ok, result or exception)`` when it answers."""
        buffers: list[pickle.PickleBuffer] = []
        call = pickle.dumps((fn, args), protocol=5, buffer_callback=buffers.append)
        spans = self._arena.place(buffers) if buffers else None
        if buffers and spans is None:  # no room in the arena now: the buffers go inside the pickle
            call = pickle.dumps((fn, args), protocol=5)
        placed = pickle.dumps(spans or [], protocol=5)
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        worker.waiting.append((future, spans is not None))
        # Two frames, the spans and the call, written as they are: no copy of a large call.
        worker.calls.writelines((HEADER.pack(len(placed)), placed, HEADER.pack(len(call)), call))
        return future

    async def _running(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.alive:
            return worker
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> _Worker:
        loop = asyncio.get_running_loop()
        try:
            process, call_fd, answer_fd = await loop.run_in_executor(None, _spawn, self.index, self._arena,
                                                                     self.heap_trim_s)
            if self.sched_policy != "normal" and process.pid:
                set_policy(process.pid, self.sched_policy)
            calls, _ = await loop.connect_write_pipe(asyncio.Protocol, _pipe_file(loop, call_fd, "wb"))
            worker = _Worker(process, calls)
            await loop.connect_read_pipe(
                lambda: _Answers(lambda payload: self._answered(worker, payload), lambda: self._lost(worker)),
                _pipe_file(loop, answer_fd, "rb"))
            self._worker = worker
            if self.warm_up is not None:  # calls run in order: every later call waits for it
                self._send(worker, self.warm_up, ()).add_done_callback(_log_warm_up_failure)
            return worker
        finally:
            self._starting = None

    def _answered(self, worker: _Worker, payload: bytes) -> None:
        future, reserved = worker.waiting.popleft()
        if reserved:
            self._arena.release_oldest()
        if future.done():
            return  # its caller was cancelled; the answer has nobody to go to
        try:
            future.set_result(pickle.loads(payload))
        except Exception as exc:  # an answer that does not unpickle here
            future.set_result((False, exc))

    def _lost(self, worker: _Worker) -> None:
        """``worker``'s answer pipe closed: it died (or the pool is closing)."""
        if not worker.alive:
            return
        worker.alive = False
        worker.calls.close()
        self._arena.clear()
        while worker.waiting:
            future, _ = worker.waiting.popleft()
            if not future.done():
                future.set_exception(LaneBroken(f"detection worker {self.index} died"))
        # Nothing to reap here: the forkserver is the worker's parent and reaps it.
        if not self._closed and worker is self._worker:
            log.warning("detection worker %d died; starting a new one", self.index)
            self.rebuilds += 1
            self._worker = None
            self._starting = asyncio.create_task(self._start())
            self._starting.add_done_callback(_log_start_failure)

    async def close(self) -> None:
        """Stop the worker: close its call pipe, so it exits; kill it if it has not within a few seconds."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._starting), STOP_TIMEOUT_S)
        worker = self._worker
        if worker is not None:
            worker.calls.close()
            await asyncio.get_running_loop().run_in_executor(None, _reap, worker.process)
            self._worker = None
        self._arena.close()


def _reap(process: BaseProcess) -> None:
    """Wait for ``process`` to exit, killing it if it has not within :data:`STOP_TIMEOUT_S`; never waits
    longer than twice that (this runs in the loop's default executor, which the loop's close waits for)."""
    process.join(STOP_TIMEOUT_S)
    if process.exitcode is None:
        process.kill()
        process.join(STOP_TIMEOUT_S)
    if process.exitcode is None:
        log.error("detection worker pid %s did not exit after SIGKILL", process.pid)


def _log_start_failure(task: asyncio.Task[_Worker]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not start a detection worker: %s", task.exception())


def _log_warm_up_failure(future: asyncio.Future[tuple[bool, Any]]) -> None:
    """A worker's warm-up that failed: logged (the worker serves on; its first calls pay the cost)."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is None:
        ok, value = future.result()
        exc = None if ok else value
    if exc is not None and not isinstance(exc, LaneBroken):
        log.warning("a detection worker's warm-up failed: %s: %s", type(exc).__name__, exc)
