"""The wall-clock time of onsets (``wall_time``), shared by WebSocket events, subscribers and OSC."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.stream.arrival import ArrivalClock
from testkit import signals
from tests.conftest import StartServer
from tests.stream_client import Client, Publisher, of_type

SLACK_S = 1.0  # how late a chunk may be read on a loaded machine; the lower bound is exact


def test_a_frame_is_dated_from_the_message_that_held_it() -> None:
    clock = ArrivalClock(1000)
    assert clock.wall_time(5, default_s=42.0) == 42.0  # nothing arrived yet
    clock.mark(100, 10.0)  # frames 0..99 arrived at t=10
    clock.mark(100, 99.0)  # an empty message changes nothing
    clock.mark(300, 10.5)  # frames 100..299 arrived at t=10.5
    assert clock.wall_time(0, 0.0) == pytest.approx(10.0 - 0.1)
    assert clock.wall_time(99, 0.0) == pytest.approx(10.0 - 0.001)
    assert clock.wall_time(100, 0.0) == pytest.approx(10.5 - 0.2)
    assert clock.wall_time(350, 0.0) == pytest.approx(10.5 + 0.05)  # past every mark: the newest
    clock.forget_before(150)  # the first mark only dates frames < 100
    assert len(clock) == 1
    assert clock.wall_time(0, 0.0) == pytest.approx(10.5 - 0.3)  # older than every mark: the oldest
    clock.forget_before(10_000)
    assert len(clock) == 1  # the newest mark is always kept


def test_marks_are_bounded() -> None:
    clock = ArrivalClock(100, max_marks=8)
    for i in range(1, 100):
        clock.mark(i, float(i))
    assert len(clock) == 8
    assert clock.wall_time(98, 0.0) == pytest.approx(99.0 - 0.01)


async def test_onsets_carry_the_wall_clock_time_their_audio_arrived(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate, chunk_s = 16000, 0.02
    samples = signals.clicks(sr=sample_rate, duration_s=1.6, seed=9, gap_s=0.25).samples
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate)
    subscriber = await Client.connect(http, server, f"/api/v3/streams/{started['stream_id']}/events")
    assert (await subscriber.receive())["type"] == "subscribed"

    step = round(chunk_s * sample_rate)
    sent_at: list[float] = []
    for i in range(0, len(samples), step):  # real time: one 20 ms chunk every 20 ms
        sent_at.append(time.time())
        await publisher.send_audio(samples[i:i + step])
        await asyncio.sleep(chunk_s)
    messages = await publisher.stop()
    onsets = of_type(messages, "onset")
    assert len(onsets) >= 4
    for onset in onsets:
        frame = round(onset["time"] * sample_rate)
        chunk = frame // step
        # The server read the chunk holding the onset after the client sent it; its last sample is dated
        # to the moment of reading, so the onset is dated (chunk end - frame) samples before that.
        earliest = sent_at[chunk] - ((chunk + 1) * step - frame) / sample_rate
        assert earliest - 0.002 <= onset["wall_time"] <= earliest + SLACK_S, (onset, earliest)
    spacing = np.diff([o["wall_time"] for o in onsets]) - np.diff([o["time"] for o in onsets])
    assert np.all(np.abs(spacing) < SLACK_S)

    seen: list[dict[str, Any]] = await subscriber.receive_until("ended")
    assert [(o["time"], o["wall_time"]) for o in of_type(seen, "onset")] == \
        [(o["time"], o["wall_time"]) for o in onsets]
    await subscriber.close()
