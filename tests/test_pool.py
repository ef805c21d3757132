"""The detection pool on its own: real worker processes, calls and answers over their pipes, deaths, close."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator

import pytest

from server.exceptions import PoolRestarted
from server.pool import DetectionPool
from server.pool.frames import FrameReader, frame
from tests.polling import until
from tests.processes import running


def slow_echo(value: int, delay_s: float) -> tuple[int, int]:
    time.sleep(delay_s)
    return value, os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def unpicklable_result() -> threading.Lock:
    return threading.Lock()


def sized(n_bytes: int) -> bytes:
    return bytes(range(256)) * (n_bytes // 256)


def checksum(data: bytes) -> int:
    return sum(data[::4096]) + len(data)


@pytest.fixture
async def pool() -> AsyncIterator[DetectionPool]:
    pool = DetectionPool(2)
    await pool.start()
    yield pool
    await pool.close()


def test_frames_split_anywhere_reassemble_in_order() -> None:
    payloads = [b"", b"a", bytes(range(256)) * 40, b"xyz"]
    stream = b"".join(frame(p) for p in payloads)
    for piece in (1, 3, 7, 4096, len(stream)):
        reader, got = FrameReader(), []
        for at in range(0, len(stream), piece):
            got += reader.feed(stream[at:at + piece])
        assert got == payloads
        assert reader.pending_bytes == 0


async def test_each_lane_is_its_own_process_and_answers_in_call_order(pool: DetectionPool) -> None:
    pids = pool.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids
    answers = await asyncio.gather(*(pool.run_on(0, slow_echo, i, 0.02 if i % 2 else 0.0) for i in range(6)))
    assert [value for value, _ in answers] == list(range(6))
    assert {pid for _, pid in answers} == set(pool.worker_pids(0))
    _, other = await pool.run_on(1, slow_echo, 0, 0.0)
    assert [other] == pool.worker_pids(1)


async def test_exceptions_and_bad_results_reach_the_caller_and_the_lane_goes_on(pool: DetectionPool) -> None:
    with pytest.raises(ValueError, match="no good"):
        await pool.run_on(0, fail, "no good")
    with pytest.raises(RuntimeError, match="cannot be sent back"):
        await pool.run_on(0, unpicklable_result)
    with pytest.raises(TypeError):  # an argument that cannot pickle never leaves the server
        await pool.run_on(0, slow_echo, threading.Lock(), 0.0)
    assert (await pool.run_on(0, slow_echo, 7, 0.0))[0] == 7
    assert pool.rebuilds == 0


async def test_megabytes_cross_both_ways_intact(pool: DetectionPool) -> None:
    data = sized(6 << 20)
    assert await pool.run_on(1, checksum, data) == checksum(data)
    assert await pool.run_on(1, sized, 6 << 20) == data


async def test_a_cancelled_call_does_not_take_the_next_calls_answer(pool: DetectionPool) -> None:
    first = asyncio.ensure_future(pool.run_on(0, slow_echo, 1, 0.3))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await pool.run_on(0, slow_echo, 2, 0.0))[0] == 2
    assert first.cancelled()


async def test_a_killed_worker_fails_its_calls_and_is_replaced_alone(pool: DetectionPool) -> None:
    [victim], [spared] = pool.worker_pids(0), pool.worker_pids(1)
    running = asyncio.ensure_future(pool.run_on(0, slow_echo, 1, 5.0))
    await asyncio.sleep(0.2)
    os.kill(victim, signal.SIGKILL)  # lane 0's worker, by its pid
    with pytest.raises(PoolRestarted):
        await running
    value, pid = await pool.run_on(0, slow_echo, 3, 0.0)
    assert value == 3 and pid != victim
    assert pool.worker_pids() == sorted([pid, spared])
    assert pool.rebuilds == 1
    assert (await pool.run_on(1, slow_echo, 4, 0.0)) == (4, spared)


async def test_close_ends_every_worker() -> None:
    pool = DetectionPool(2)
    pids = await pool.start()
    await pool.run(slow_echo, 0, 0.0)
    await pool.close()
    assert pool.worker_pids() == []

    async def all_gone() -> bool:
        return not any(running(pid) for pid in pids)

    await until(all_gone, timeout_s=10)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(slow_echo, 0, 0.0)
