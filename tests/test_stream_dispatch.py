"""The dispatch interval: the pure rule with known answers, and a real scheduler feeding a real pool by it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from server.config import Config, parse_config
from server.events.hub import LocalHub
from server.pool import DetectionPool
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import AudioFormat, Encoding, Event
from server.stream.dispatch_rule import DispatchRule, dispatch_interval_s
from server.stream.scheduler import TIMER_TICK_S, BatchScheduler, pause_for
from server.stream.session import StreamLinks, StreamSession
from server.stream.settings import StreamSettings
from tests.polling import until

RATE_HZ = 48000
CHUNK_FRAMES = 960  # 20 ms


@pytest.mark.parametrize(("streams", "want_ms"), [
    (0, 4.0), (1, 4.0), (16, 4.0), (80, 4.0),  # few streams: today's 4 ms
    (81, 4.05), (128, 6.4), (192, 9.6), (256, 12.8),  # 0.05 ms a stream
    (320, 16.0), (321, 16.0), (4096, 16.0),  # capped: the bound on the wait it adds
])
def test_the_interval_grows_with_the_lanes_streams_between_its_bounds(streams: int, want_ms: float) -> None:
    got = dispatch_interval_s(streams, min_interval_ms=4.0, per_stream_ms=0.05, max_interval_ms=16.0)
    assert got == pytest.approx(want_ms / 1000.0)


def test_edge_rules() -> None:
    # No growth: a fixed interval, as before the rule (and 0: dispatch at once).
    assert dispatch_interval_s(500, min_interval_ms=4.0, per_stream_ms=0.0, max_interval_ms=4.0) == 0.004
    assert dispatch_interval_s(500, min_interval_ms=0.0, per_stream_ms=0.0, max_interval_ms=0.0) == 0.0
    # Crossed bounds: the maximum, the latency bound, wins; a negative setting never gives a negative wait.
    assert dispatch_interval_s(1, min_interval_ms=10.0, per_stream_ms=0.0, max_interval_ms=6.0) == 0.006
    assert dispatch_interval_s(10, min_interval_ms=-1.0, per_stream_ms=-1.0, max_interval_ms=-1.0) == 0.0


def test_a_lane_waits_at_least_a_timer_tick_and_float_error_is_no_wait() -> None:
    # uvloop's timers and clock count milliseconds: a shorter sleep would wake the scheduler at once, again
    # and again until the millisecond turns.
    assert pause_for(0.0032) == 0.0032
    assert pause_for(0.0002) == TIMER_TICK_S == 0.001
    assert pause_for(0.0) is None and pause_for(-0.001) is None
    last_s, now_s = 1000003 / 1000, 1000007 / 1000  # two readings of uvloop's millisecond clock, 4 ms apart
    assert last_s + 0.004 - now_s > 0  # float error, not time left
    assert pause_for(last_s + 0.004 - now_s) is None


def test_the_servers_rule_comes_from_its_config() -> None:
    config = Config()
    rule = DispatchRule(config.dispatch_interval_ms, config.dispatch_per_stream_ms,
                        config.max_dispatch_interval_ms)
    assert rule == DispatchRule()  # the embedded default is the config's
    # By default 0.05 ms a stream, at most 4 ms: a lone stream is sent at once, 16 streams wait 0.8 ms at
    # most, and from 80 streams on a lane waits 4 ms between calls.
    assert rule.interval_s(1) == pytest.approx(0.00005)
    assert rule.interval_s(16) == pytest.approx(0.0008)
    assert rule.interval_s(80) == pytest.approx(0.004) and rule.interval_s(320) == 0.004
    tuned = parse_config(["--dispatch-per-stream-ms", "0.1", "--max-dispatch-interval-ms", "10"],
                         {"TRANSIENT_DISPATCH_INTERVAL_MS": "2"})
    got = (tuned.dispatch_interval_ms, tuned.dispatch_per_stream_ms, tuned.max_dispatch_interval_ms)
    assert got == (2.0, 0.1, 10.0)


class _Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def fault(self, error: ProtocolError) -> None:
        raise AssertionError(error)


@pytest.fixture
async def pool() -> AsyncIterator[DetectionPool]:
    pool = DetectionPool(1)
    await pool.start()
    yield pool
    await pool.close()


async def _reached(count: Callable[[], int], n: int) -> None:
    async def check() -> bool:
        return count() >= n

    await until(check, timeout_s=30.0)


def _sessions(scheduler: BatchScheduler, n: int) -> list[StreamSession]:
    audio_format = AudioFormat(RATE_HZ, 1, Encoding.PCM_F32LE)
    links = StreamLinks(LocalHub(8), scheduler.notify, lambda session: None)
    settings = StreamSettings.from_mapping({"beats": False})
    return [StreamSession(f"s{i}", audio_format, settings, max_buffer_s=5.0, sink=_Sink(), links=links,
                          lane=scheduler.assign()) for i in range(n)]


async def test_a_lane_waits_its_interval_which_grows_with_its_streams(pool: DetectionPool) -> None:
    # 40 ms a stream, no least interval: with 3 streams a lane waits 120 ms between calls, with 1 40 ms.
    scheduler = BatchScheduler(pool, rule=DispatchRule(0.0, 40.0, 1000.0))
    running = asyncio.create_task(scheduler.run())
    try:
        first, second, third = _sessions(scheduler, 3)
        assert scheduler.interval_s(0) == pytest.approx(0.12)
        chunk = np.random.default_rng(7).uniform(-0.1, 0.1, (CHUNK_FRAMES, 1)).astype(np.float32)
        t0 = time.perf_counter()
        first.feed(chunk)  # the lane's first call goes at once
        await _reached(lambda: scheduler.batches, 1)
        second.feed(chunk)  # the next waits until 120 ms after the first call went
        await _reached(lambda: scheduler.batches, 2)
        assert time.perf_counter() - t0 >= 0.12
        for ended in (second, third):
            scheduler.release(ended.lane, None)
        assert scheduler.interval_s(0) == pytest.approx(0.04)
        first.feed(chunk)
        await _reached(lambda: scheduler.batches, 3)
        assert scheduler.jobs == 3
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_streams_ready_within_the_interval_share_one_call(pool: DetectionPool) -> None:
    # 20 streams at 50 ms each: 1 s between calls, so audio fed 2 ms apart after the first call goes in one
    # (with a fixed 4 ms it would take about ten).
    scheduler = BatchScheduler(pool, rule=DispatchRule(0.0, 50.0, 5000.0))
    running = asyncio.create_task(scheduler.run())
    try:
        sessions = _sessions(scheduler, 20)
        chunk = np.random.default_rng(8).uniform(-0.1, 0.1, (CHUNK_FRAMES, 1)).astype(np.float32)
        sessions[0].feed(chunk)
        await _reached(lambda: scheduler.batches, 1)
        for session in sessions[1:]:
            session.feed(chunk)
            await asyncio.sleep(0.002)
        await _reached(lambda: scheduler.jobs, 20)
        assert scheduler.batches == 2  # the 19 others in one call
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
