"""Server processes for the benchmarks: start ``run.py`` on a free port; read its process tree in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def launch(command: Sequence[str], *, what: str = "the server",
           new_session: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start ``command`` (from the repository, output piped) and wait for its ``serving on URL`` line;
    returns the process and that URL. ``new_session``: its own process group, to stop it with its pool."""
    proc = subprocess.Popen(list(command), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=new_session)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1].strip()
    raise RuntimeError(f"{what} did not start")


def stop(proc: subprocess.Popen[Any], *, group: bool = False, timeout_s: float = 30.0) -> None:
    """SIGTERM to ``proc`` (``group``: to its whole process group, see ``launch(new_session=True)``), then
    SIGKILL if it has not exited within ``timeout_s``; reaps it. A process already reaped is not signalled
    (its pid may be another's by now); its group still is, for what it left running."""
    if not group and proc.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def start_server(run_args: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``python run.py --port 0 RUN_ARGS``; returns the process and its base URL once it serves."""
    return launch([sys.executable, str(REPO / "run.py"), "--port", "0", *run_args])


def descendants(*roots: int) -> list[int]:
    """``roots`` and every process below them (roots first), from /proc/PID/task/TID/children."""
    found: list[int] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                stack += [int(child) for child in (task / "children").read_text().split()]
    return found


def _status_kib(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/PID/status`` (``VmRSS``, ``RssAnon``, ...), in KiB (raises OSError)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.endswith(" kB"):
            fields[name] = int(value.split()[0])
    return fields


def rss_bytes(pids: list[int], field: str = "VmRSS") -> int:
    """Summed resident set size of ``pids`` (VmRSS from /proc), in bytes; vanished processes count 0.

    ``field`` ``RssAnon``: only their anonymous memory (their own heaps and stacks), without the pages of
    files they map (shared library code, shared with every process that runs it) and of shared memory
    (the pool's arena, mapped by the server and its worker and counted by VmRSS in both)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _status_kib(pid).get(field, 0) * 1024
    return total


MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")  # from /proc/PID/status, KiB


def memory_of(pids: list[int]) -> dict[int, dict[str, int]]:
    """Per process of ``pids``: :data:`MEMORY_FIELDS` and ``Pss`` (smaps_rollup: shared pages divided
    among the processes that map them), in KiB; ``memfd`` the resident KiB of the shared-memory files it
    holds open (the pool's arenas, each counted once however many processes map it and however many of
    its descriptors are open). Vanished ones are left out."""
    found: dict[int, dict[str, int]] = {}
    for pid in pids:
        try:
            status = _status_kib(pid)
            fields = {name: status[name] for name in MEMORY_FIELDS if name in status}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    fields["Pss"] = int(line.split()[1])
            memfds: dict[tuple[int, int], int] = {}
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith("/memfd:"):
                        info = fd.stat()
                        memfds[info.st_dev, info.st_ino] = info.st_blocks // 2
            fields["memfd"] = sum(memfds.values())
            found[pid] = fields
        except OSError:
            continue
    return found


def memory_totals(memory: dict[int, dict[str, int]], main_pid: int) -> tuple[int, int, int]:
    """From one :func:`memory_of` reading of a process tree: its summed VmRSS, ``main_pid``'s VmRSS and its
    summed RssAnon, in bytes (what :func:`rss_bytes` gives for each)."""
    rss = sum(fields.get("VmRSS", 0) for fields in memory.values())
    anon = sum(fields.get("RssAnon", 0) for fields in memory.values())
    return rss * 1024, memory.get(main_pid, {}).get("VmRSS", 0) * 1024, anon * 1024
