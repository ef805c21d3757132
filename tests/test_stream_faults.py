"""A stream that falls behind drops its oldest audio and says so; a dead pool worker does not end it."""

from __future__ import annotations

import asyncio
import os
import signal as signals_mod

import aiohttp
import numpy as np
import pytest

from server import appkeys
from tests.conftest import StartServer
from tests.stream_client import Publisher, of_type, onset_times

SAMPLE_RATE = 16000


def click_train(duration_s: float, every_s: float, first_s: float) -> tuple[np.ndarray, list[float]]:
    samples = np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)
    times = list(np.arange(first_s, duration_s - 0.1, every_s))
    for t in times:
        samples[round(t * SAMPLE_RATE):][:16] = 0.9
    return samples, times


def near(times: list[float], at_s: float, within_s: float = 0.01) -> bool:
    return any(abs(t - at_s) <= within_s for t in times)


async def test_falling_behind_drops_the_oldest_audio_and_reports_it(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    max_buffer_s = 0.05
    server = await start_server(max_buffer_s=max_buffer_s, status_interval_s=0.05)
    publisher = await Publisher.open(http, server)
    await publisher.start(SAMPLE_RATE)
    burst = np.random.default_rng(0).uniform(-0.5, 0.5, round(2.0 * SAMPLE_RATE)).astype(np.float32)
    await publisher.stream(burst, SAMPLE_RATE, chunk_s=0.25)  # 0.25 s frames into a 0.05 s buffer
    messages = await publisher.receive_until("warning")
    warning = of_type(messages, "warning")[0]
    assert warning["code"] == "audio_dropped"
    assert warning["dropped_s"] > 0

    # Then a paced click train: on the stream's own timeline, 2 s after the first sample.
    clicks, click_times = click_train(2.0, 0.25, 0.2)
    await asyncio.sleep(0.2)
    await publisher.stream(clicks, SAMPLE_RATE, chunk_s=0.01, pace=1.0)
    messages += await publisher.stop()
    statuses = of_type(messages, "status")
    assert statuses[-1]["dropped_s"] >= 1.5  # most of the burst (more if a loaded machine lags later)
    assert statuses[-1]["received_s"] == pytest.approx(4.0)
    for status in statuses:  # what waits never exceeds the buffer plus the one block in flight
        assert status["lag_s"] <= 2 * max_buffer_s + 1e-6
    stopped = of_type(messages, "stopped")[0]
    assert stopped["duration"] == pytest.approx(4.0)
    times = onset_times(messages)
    later = [t for t in times if t > 2.1]
    # Clicks are found where they are on the stream's timeline, however much audio was dropped before.
    assert sum(near(later, 2.0 + t) for t in click_times) >= len(click_times) // 2
    assert all(any(abs(t - (2.0 + c)) < 0.02 for c in click_times) for t in later)


async def test_a_killed_pool_worker_reinitialises_the_stream(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_buffer_s=10.0)
    pool = server.app[appkeys.POOL]
    publisher = await Publisher.open(http, server)
    await publisher.start(SAMPLE_RATE)
    samples, click_times = click_train(3.0, 0.25, 0.1)
    half = len(samples) // 2
    await publisher.stream(samples[:half], SAMPLE_RATE, chunk_s=0.02, pace=0.2)
    for pid in pool.worker_pids():
        os.kill(pid, signals_mod.SIGKILL)  # a worker of the server under test, stopped by its pid
    await publisher.stream(samples[half:], SAMPLE_RATE, chunk_s=0.02, pace=0.2)
    messages = await publisher.stop()
    warnings = of_type(messages, "warning")
    assert warnings and warnings[0]["code"] == "pool_restarted"
    assert pool.rebuilds >= 1
    times = onset_times(messages)
    after = [t for t in click_times if t > 1.6]  # clicks well after the restart are all found
    assert all(near(times, t) for t in after)
    assert of_type(messages, "stopped")[0]["duration"] == pytest.approx(3.0)
    assert messages[-1]["code"] == 1000


async def test_a_killed_worker_reinitialises_only_its_own_streams(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_buffer_s=10.0, workers=2)
    pool = server.app[appkeys.POOL]
    publishers = [await Publisher.open(http, server) for _ in range(2)]
    stream_ids = [(await publisher.start(SAMPLE_RATE))["stream_id"] for publisher in publishers]
    sessions = {session.lane: session.stream_id for session in server.app[appkeys.STREAMS].registry}
    assert sorted(sessions) == [0, 1]  # one stream per worker
    samples, click_times = click_train(3.0, 0.25, 0.1)
    half = len(samples) // 2

    async def feed(part: np.ndarray) -> None:
        await asyncio.gather(*(p.stream(part, SAMPLE_RATE, chunk_s=0.02, pace=0.2) for p in publishers))

    await feed(samples[:half])
    await asyncio.sleep(0.3)  # both streams analysed so far: their detectors wait in their workers
    victim = pool.worker_pids(0)
    assert victim and set(victim).isdisjoint(pool.worker_pids(1))
    for pid in victim:
        os.kill(pid, signals_mod.SIGKILL)  # lane 0's worker of the server under test, by its pid
    await feed(samples[half:])
    results = {stream_id: await publisher.stop()
               for stream_id, publisher in zip(stream_ids, publishers, strict=True)}
    hit, spared = results[sessions[0]], results[sessions[1]]
    assert [w["code"] for w in of_type(hit, "warning")] == ["pool_restarted"]
    assert of_type(spared, "warning") == []
    for messages in (hit, spared):
        times = onset_times(messages)
        assert all(near(times, t) for t in click_times if t > 1.6)
        assert of_type(messages, "stopped")[0]["duration"] == pytest.approx(3.0)
    assert pool.rebuilds == 1


async def test_an_unexpected_fault_in_the_receive_loop_is_internal_1011_and_keeps_the_accepted_audio(
    start_server: StartServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    # No client message can make the server fail unexpectedly (that would be a bug of its own), so the
    # fault is put in by hand: handling a `keepalive` raises. It used to close the socket 1000, silently.
    from server.stream import control

    handle = control.handle

    def failing(session: object, message: object, controlled: object) -> None:
        if type(message).__name__ == "Keepalive":
            raise RuntimeError("a fault put in by the test")
        handle(session, message, controlled)  # type: ignore[arg-type]

    monkeypatch.setattr(control, "handle", failing)
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.start(SAMPLE_RATE)
    clicks, times = click_train(1.0, 0.25, 0.1)
    await publisher.stream(clicks, SAMPLE_RATE)
    await publisher.send({"type": "keepalive"})
    messages = await publisher.receive_all()
    errors = of_type(messages, "error")
    assert [e["code"] for e in errors] == ["internal"], messages
    assert messages[-1] == {"type": "<closed>", "code": 1011}, messages
    found = onset_times(messages)
    assert all(near(found, t) for t in times), (found, times)  # the audio accepted before it, analysed
    assert "unexpected error" in caplog.text and "a fault put in by the test" in caplog.text
    # The server serves the next stream as before.
    other = await Publisher.open(http, server)
    await other.start(SAMPLE_RATE)
    await other.stream(clicks, SAMPLE_RATE)
    assert len(onset_times(await other.stop())) == len(times)
