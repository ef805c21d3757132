"""The pool closes each of its file descriptors once (seen with strace): a second close of a number that
another thread was given meanwhile closes that thread's file instead (found as a worker's pipe closed under
it, at the teardown of a test that kills workers)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace missing")

SCRIPT = textwrap.dedent("""
    import asyncio, os, signal, uvloop
    from server.pool import DetectionPool

    async def main():
        pool = DetectionPool(2)
        pids = await pool.start()
        os.kill(pids[0], signal.SIGKILL)  # its lane starts a replacement
        for _ in range(200):
            await asyncio.sleep(0.05)
            if pool.rebuilds and len(pool.worker_pids()) == 2:
                break
        assert await pool.run_on(0, os.getpid) != pids[0]
        await pool.close()
        await pool.close()  # closing twice is harmless

    if __name__ == "__main__":
        uvloop.run(main())
""")


def test_pool_closes_each_fd_once(tmp_path: Path) -> None:
    script = tmp_path / "pool_close.py"
    script.write_text(SCRIPT)
    trace = tmp_path / "close.trace"
    root = Path(__file__).resolve().parents[1]
    command = ["strace", "-f", "-e", "trace=close", "-o", str(trace), sys.executable, str(script)]
    done = subprocess.run(command, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = trace.read_text()
    assert len(re.findall(r"close\(\d+", calls)) > 10  # the trace saw the pool's closes
    bad = [line for line in calls.splitlines() if "EBADF" in line]
    assert not bad, "\n".join(bad)
