"""Freed heap memory goes back to the system (glibc's malloc_trim), in this process and in pool workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from server.pool import DetectionPool
from server.pool.heap import HeapTrim, glibc_trim, trim_every

pytestmark = pytest.mark.skipif(glibc_trim() is None, reason="the C library has no malloc_trim")

HOLE_BYTES = 64 << 10  # under glibc's mmap threshold: from the heap
HOLES = 800  # 50 MiB freed in the middle of the heap


def resident_kb() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def leave_holes() -> list[bytes]:
    """Free ~50 MiB in the middle of the heap: the blocks between the kept ones pin it below the top."""
    blocks = [bytes(HOLE_BYTES) + bytes([i % 256]) for i in range(2 * HOLES)]
    kept = blocks[1::2]
    del blocks
    return kept


def holes_then_trim(every_s: float, now_s: float) -> tuple[int, int, bool, list[bytes]]:
    """In the calling process: RSS after leaving holes, RSS after ``HeapTrim(every_s).maybe(now_s)``."""
    kept = leave_holes()
    before = resident_kb()
    trimmed = HeapTrim(every_s).maybe(now_s)
    return before, resident_kb(), trimmed, kept


def holes_and_rss() -> tuple[int, int]:
    """In a pool worker: leave holes, then report RSS (the worker trims after answering, if due)."""
    kept = leave_holes()
    HOLDING.append(kept)  # keep the pinning blocks for the next call
    return os.getpid(), resident_kb()


def rss() -> tuple[int, int]:
    return os.getpid(), resident_kb()


HOLDING: list[list[bytes]] = []


def test_trim_gives_back_freed_heap_pages_at_most_once_an_interval() -> None:
    before, after, trimmed, kept = holes_then_trim(1.0, 1000.0)
    assert trimmed and len(kept) == HOLES
    assert before - after > 40 << 10  # most of the 50 MiB of holes, in KiB
    trim = HeapTrim(1.0)
    assert trim.maybe(10.0) and not trim.maybe(10.5) and trim.maybe(11.0) and trim.trims == 2
    never = HeapTrim(0.0)
    assert not never.active and not never.maybe(10.0) and never.trims == 0
    with pytest.raises(ValueError, match="trim interval"):
        HeapTrim(-1.0)


@pytest.mark.parametrize("every_s", [0.001, 0.0])
async def test_a_worker_trims_after_answering_unless_told_never(every_s: float) -> None:
    pool = DetectionPool(1, heap_trim_s=every_s)
    try:
        await pool.start()
        pid, holed = await pool.run_on(0, holes_and_rss)
        same, later = await pool.run_on(0, rss)  # the worker answered once since: trimmed if due
        assert same == pid
        if every_s:
            assert holed - later > 40 << 10
        else:
            assert holed - later < 8 << 10
    finally:
        await pool.close()


async def test_the_event_loop_trims_its_heap_every_interval() -> None:
    trim = HeapTrim(0.02)
    task = asyncio.create_task(trim_every(trim))
    await asyncio.sleep(0.15)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 3 <= trim.trims <= 8
