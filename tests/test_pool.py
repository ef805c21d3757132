"""The detection pool on its own: real worker processes, calls and answers over their pipes, deaths, close."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from server.dsp import DetectorSettings
from server.exceptions import PoolRestarted
from server.pool import DetectionPool
from server.pool.arena import ARENA_BYTES, Arena, ArenaView, SharedFd, unused_pages
from server.pool.frames import FrameReader, frame
from server.pool.worker import WORKER_NICE
from server.stream.in_worker import Job, run_batch, warm_up
from tests import worker_probe
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


def arrays_sum(arrays: list[np.ndarray], delay_s: float = 0.0) -> list[float]:
    time.sleep(delay_s)
    return [float(array.astype(np.float64).sum()) for array in arrays]


def buffers(*sizes: int) -> list[pickle.PickleBuffer]:
    return [pickle.PickleBuffer(bytes([size % 251]) * size) for size in sizes]


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


def test_arena_reserves_in_a_ring_released_oldest_first() -> None:
    arena = Arena(1000)
    try:
        view = ArenaView(SharedFd(os.dup(arena.fd)), 1000)
        first = arena.place(buffers(300, 100))
        assert first == [(0, 300), (300, 100)]
        assert view.copies(first) == [bytes([300 % 251]) * 300, bytes([100]) * 100]
        second = arena.place(buffers(500))
        assert second == [(400, 500)]
        assert arena.place(buffers(200)) is None  # 100 free at the end, none before the oldest
        arena.release_oldest()  # [0, 400) is free again: the next reservation wraps to the start
        third = arena.place(buffers(350))
        assert third == [(0, 350)]
        assert view.copies(third) == [bytes([350 % 251]) * 350]
        assert arena.place(buffers(60)) is None  # 50 left before the oldest (at 400), 100 at the end
        assert arena.place(buffers(1001)) is None  # larger than the arena
        assert arena.reserved == 2
        arena.clear()
        assert arena.place(buffers(1000)) == [(0, 1000)]  # an empty arena starts at its first byte
    finally:
        arena.close()


def test_unused_pages_are_those_past_the_kept_bytes_and_the_last_use() -> None:
    assert unused_pages(0, 0, 1 << 20, 4096) is None  # nothing written yet
    assert unused_pages(900_000, 900_000, 1 << 20, 4096) is None  # within the bytes always kept
    assert unused_pages(3 << 20, 10_000, 1 << 20, 4096) == (1 << 20, 2 << 20)
    # The last interval's calls reached 1.5 MiB + 1 byte: its page stays, the rest up to 3 MiB goes.
    assert unused_pages(3 << 20, (3 << 19) + 1, 1 << 20, 4096) == ((3 << 19) + 4096, (3 << 19) - 4096)
    assert unused_pages(5000, 0, 0, 4096) == (0, 8192)  # the page holding the last byte written goes too


def _resident_bytes(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512  # a memfd's pages in memory (tmpfs allocates none for holes)


def test_arena_gives_back_the_pages_a_burst_used_once_calls_are_small_again() -> None:
    arena = Arena(8 << 20, keep_bytes=1 << 20, release_every_s=60.0)
    try:
        view = ArenaView(SharedFd(os.dup(arena.fd)), 8 << 20)
        burst = arena.place(buffers(3 << 20))  # a batch of streams that fell behind
        assert burst is not None and view.copies(burst) == [bytes([(3 << 20) % 251]) * (3 << 20)]
        assert _resident_bytes(arena.fd) >= 3 << 20
        assert arena.give_back(time.monotonic() + 120.0) == 0  # a call holds its reservation
        arena.release_oldest()  # within the interval: nothing given back yet
        assert _resident_bytes(arena.fd) >= 3 << 20
        # The next interval's check sees the burst's own use, so it keeps it (streams may be behind still).
        assert arena.give_back(time.monotonic() + 120.0) == 0
        small = arena.place(buffers(100_000))
        assert small == [(0, 100_000)]
        arena.release_oldest()
        assert arena.give_back(time.monotonic() + 240.0) == 2 << 20  # small calls only: past 1 MiB goes
        assert _resident_bytes(arena.fd) <= 1 << 20
        assert arena.touched_bytes == 1 << 20 and arena.released_bytes == 2 << 20
        again = arena.place(buffers(2 << 20))  # a later burst finds the memory again, intact
        assert again is not None and view.copies(again) == [bytes([(2 << 20) % 251]) * (2 << 20)]
    finally:
        arena.close()


async def test_arrays_cross_through_the_arena_or_inside_the_pickle_intact(pool: DetectionPool) -> None:
    rng = np.random.default_rng(3)
    small = [rng.standard_normal((960, 1)).astype(np.float32) for _ in range(300)]
    too_big = [np.ones(ARENA_BYTES // 4 + 1, np.float32)]  # cannot fit: goes inside the pickle
    expected = [float(a.astype(np.float64).sum()) for a in small]
    # Several calls in flight on one lane at once, each holding its own part of the arena.
    answers = await asyncio.gather(*(pool.run_on(0, arrays_sum, small, 0.05) for _ in range(4)),
                                   pool.run_on(0, arrays_sum, too_big))
    assert answers[:4] == [expected] * 4
    assert answers[4] == [float(ARENA_BYTES // 4 + 1)]
    assert await pool.run_on(0, arrays_sum, small) == expected


async def test_each_lane_is_its_own_process_and_answers_in_call_order(pool: DetectionPool) -> None:
    pids = pool.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(19, ours + WORKER_NICE)] * 2
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
    arrays = [np.full((960, 1), i, np.float32) for i in range(50)]  # through the arena, to the new worker
    assert await pool.run_on(0, arrays_sum, arrays) == [960.0 * i for i in range(50)]


def own_policy() -> int:
    return os.sched_getscheduler(0)


async def test_the_batch_policy_reaches_the_loop_every_worker_and_a_replacement() -> None:
    pool = DetectionPool(2, sched_policy="batch")
    try:
        pids = await pool.start()
        assert os.sched_getscheduler(0) == os.SCHED_BATCH  # the event loop's thread
        assert [os.sched_getscheduler(pid) for pid in pids] == [os.SCHED_BATCH] * 2
        running = asyncio.ensure_future(pool.run_on(0, slow_echo, 1, 5.0))
        await asyncio.sleep(0.2)
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(PoolRestarted):
            await running
        assert await pool.run_on(0, own_policy) == os.SCHED_BATCH
    finally:
        await pool.close()
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # the test process's, as it was
    assert DetectionPool(1).sched_policy == "normal"
    with pytest.raises(ValueError, match="sched_policy"):
        DetectionPool(1, sched_policy="fifo")


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


async def test_workers_start_with_the_code_of_live_batches_and_file_jobs(pool: DetectionPool) -> None:
    # Loaded by the forkserver before the first call: a first file job does not wait for PyAV's import.
    wanted = ["server.dsp", "server.stream.in_worker", "server.jobs.work", "av"]
    for lane in range(pool.workers):
        assert await pool.run_on(lane, worker_probe.loaded, wanted) == wanted


async def test_least_busy_is_the_lane_with_fewest_calls_and_prefer_breaks_ties(pool: DetectionPool) -> None:
    assert pool.workers == 2
    assert pool.least_busy() == 0 and pool.least_busy(prefer=1) == 1  # none in flight: equals
    held = asyncio.ensure_future(pool.run_on(1, time.sleep, 0.5))
    await asyncio.sleep(0)
    try:
        assert pool.least_busy(prefer=1) == 0  # a preference never takes a busier lane
        assert await pool.run(os.getpid) == pool.worker_pids(0)[0]
    finally:
        await held
    assert pool.least_busy(prefer=1) == 1


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


async def _first_stream_file_pages_kib(pool: DetectionPool) -> int:
    """The file pages (shared library code) lane 0's worker faults in for a new stream's first second."""
    [pid] = pool.worker_pids(0)
    before = _status_kib(pid, "RssFile")
    audio = np.zeros(960, np.float32)
    audio[10:20] = 0.5
    jobs = [Job("first", 48000, 1, "<f4", DetectorSettings(), audio.tobytes(), 0.0, fresh=True)]
    for _ in range(50):
        await pool.run_on(0, run_batch, jobs)
        jobs = [Job("first", 48000, 1, "<f4", None, audio.tobytes(), 0.0)]
    return _status_kib(pid, "RssFile") - before


async def _answered_by_another(pool: DetectionPool, pid: int) -> bool:
    try:
        return await pool.run_on(0, os.getpid) != pid
    except PoolRestarted:
        return False


async def test_a_warmed_up_worker_faults_in_no_library_code_for_its_first_stream() -> None:
    """With ``warm_up`` (as the server makes its pool) a worker, and the one that replaces it when it dies,
    has touched the code a stream's jobs run before its first call; cold, a first stream faults in
    megabytes of it (and waits for it)."""
    cold = DetectionPool(1)
    try:
        await cold.start()
        cold_kib = await _first_stream_file_pages_kib(cold)
    finally:
        await cold.close()
    warm = DetectionPool(1, warm_up=warm_up)
    try:
        [first] = await warm.start()
        warm_kib = await _first_stream_file_pages_kib(warm)
        os.kill(first, signal.SIGKILL)
        await until(lambda: _answered_by_another(warm, first))  # so after the replacement's warm-up
        replaced_kib = await _first_stream_file_pages_kib(warm)
    finally:
        await warm.close()
    assert cold_kib > 2048, cold_kib  # measured 6.2 MiB
    assert warm_kib < 512 and replaced_kib < 512, (warm_kib, replaced_kib)  # measured 0
