"""Server processes for the benchmarks: start ``run.py`` on a free port; read its process tree in /proc."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_server(run_args: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``python run.py --port 0 RUN_ARGS``; returns the process and its base URL once it serves."""
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--port", "0", *run_args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1].strip()
    raise RuntimeError("the server did not start")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/*/stat parent links."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def rss_bytes(pids: list[int]) -> int:
    """Summed resident set size of ``pids`` (VmRSS from /proc), in bytes; vanished processes count 0."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total
