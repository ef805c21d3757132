"""The body of a pool worker process: run the calls that arrive on one pipe, answer on the other, in order.

The worker is single-threaded apart from a watcher of the server process: it ends as soon as the server
does, even when the server was killed with SIGKILL, so no detection process outlives its server. It also
ends when the server closes its end of the call pipe (a normal shutdown). SIGINT and SIGTERM are ignored: a
Ctrl-C in a terminal, ``timeout``, ``kill -- -PGID`` and systemd's default stop signal the whole process
group at once, and only the server decides when its workers stop (a worker killed under a job it is running
would be replaced and the job restarted while the server shuts down). It runs at
the server's CPU priority (:data:`WORKER_NICE`).

A long piece of work (a file job's turn, :func:`server.jobs.work.analyse_turn`) asks :func:`calls_waiting`
between its steps and returns early when another call is already waiting for this worker. The call pipe is
read unbuffered, so a waiting call is always in the pipe, where ``select`` sees it, never in a buffer of
this process.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from server.pool.arena import ArenaView, SharedFd
from server.pool.frames import HEADER, frame
from server.pool.heap import TRIM_EVERY_S, HeapTrim

# Workers run at the server's own priority. At a lower one (it was nice +10) any ordinary process of the
# host takes their CPU first: two spinners pinned to one busy core for 4 s got 1.20 s of CPU at nice 0
# and 0.14 s at nice +10 (load average 11.6), and a stream's onsets wait for its worker. The probe
# (128 streams, one core) had 1 worker at nice 0 best: p99 54.6 ms against 114 ms for 2 at nice +10.
# What kept the event loop responsive then is the pool's size (one worker per usable core,
# server.pool.cores), not a lower priority.
WORKER_NICE = 0


def _exit_with(server_pid: int) -> None:
    """End this process as soon as the server process ``server_pid`` has ended."""
    try:
        handle = os.pidfd_open(server_pid)
    except OSError:  # already gone (or no pidfd support): nothing to serve
        os._exit(0)
    select.select([handle], [], [])  # a pidfd becomes readable when its process ends
    os._exit(0)


class CallPipe:
    """This worker's end of its call pipe, once :func:`serve` runs (``None`` in any other process)."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def waiting(self) -> bool:
        """Whether the next call (or the server's closing of the pipe) is already there to be read."""
        if self.fd is None:
            return False
        readable, _, _ = select.select([self.fd], [], [], 0)
        return bool(readable)


# The one piece of pool state a call may read in a worker: a pool call names a function of a module, so
# that function reaches its worker's pipe only through a module (as server.stream.in_worker's detectors).
CALLS = CallPipe()


def calls_waiting() -> bool:
    """In a pool worker: whether another call waits for it. Outside one (a test, the CLI): ``False``."""
    return CALLS.waiting()


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """``size`` bytes from ``fd``, or ``None`` if the pipe closes first."""
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if not count:
            return None
        got += count
    return data


def _read_frame(fd: int) -> bytearray | None:
    """The next frame's payload, or ``None`` once the server has closed the pipe."""
    header = _read_exactly(fd, HEADER.size)
    return None if header is None else _read_exactly(fd, HEADER.unpack(header)[0])


def _answer(ok: bool, value: Any) -> bytes:
    """The pickled answer; an exception or result that cannot pickle is answered as a RuntimeError."""
    try:
        return frame(pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        what = "exception" if not ok else "result"
        detail = f"{type(value).__name__}: {value}" if not ok else f"{type(exc).__name__}: {exc}"
        error = RuntimeError(f"the worker's {what} cannot be sent back: {detail}")
        return frame(pickle.dumps((False, error)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(calls: Connection, answers: Connection, server_pid: int, arena: SharedFd, arena_bytes: int,
          heap_trim_s: float = TRIM_EVERY_S) -> None:
    """Worker process main: answer every call from ``calls`` on ``answers`` until the server goes away.

    A call's large buffers are in the lane's shared ``arena`` (see :mod:`server.pool.arena`). After an
    answer, at most every ``heap_trim_s``, the worker gives its freed heap memory back
    (:mod:`server.pool.heap`)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    if WORKER_NICE:
        os.nice(WORKER_NICE)
    threading.Thread(target=_exit_with, args=(server_pid,), name="server-watch", daemon=True).start()
    import server.dsp  # noqa: F401  # the first real call pays no import cost

    shared = ArenaView(arena, arena_bytes)
    heap = HeapTrim(heap_trim_s)
    answer_fd = answers.fileno()  # both connections stay open (and their descriptors theirs) until exit
    call_fd = CALLS.fd = calls.fileno()
    while True:
        placed, call = _read_frame(call_fd), _read_frame(call_fd)
        if placed is None or call is None:
            return  # the server closed the pipe
        try:
            fn, args = pickle.loads(call, buffers=shared.copies(pickle.loads(placed)))
            reply = _answer(True, fn(*args))
        except BaseException as exc:  # the call's failure is the caller's to see, as with any executor
            reply = _answer(False, exc)
        _write_all(answer_fd, reply)
        heap.maybe(time.monotonic())
