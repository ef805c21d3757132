"""Two Redis hubs in one process, as two instances would have them, on a real redis-server: the subscriber
limit counts every instance, a slow subscriber elsewhere overflows alone, ``ended`` and the listing cross
instances, and a stream whose instance stops refreshing it expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.events.hub import SubscriberLimit, UnknownStream
from server.protocol import stream_messages as msg
from server.scale.client import connect
from server.scale.hub import EXPIRED, RedisHub
from server.scale.keys import Keys
from server.scale.listener import Listener
from tests.polling import until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

KEYS = Keys("hubtest")
WAIT_S = 20.0

MakeHub = Callable[..., Awaitable[RedisHub]]


@pytest.fixture
async def make_hub(redis_server: RedisServer) -> AsyncIterator[MakeHub]:
    """``await make_hub("a", max_subscribers=2, ttl_s=10)``: a started hub with its own connections."""
    made: list[tuple[RedisHub, Listener, Any]] = []

    async def make(instance: str, max_subscribers: int = 64, ttl_s: float = 10.0) -> RedisHub:
        client = await connect(redis_server.url)
        listener = Listener(client)
        await listener.start(f"{KEYS.prefix}:control", lambda channel, data: None)
        hub = RedisHub(client, listener, KEYS, instance=instance, max_subscribers_per_stream=max_subscribers,
                       stream_ttl_s=ttl_s)
        await hub.start()
        made.append((hub, listener, client))
        return hub

    yield make
    for hub, listener, client in reversed(made):
        await hub.close()
        await listener.close()
        await client.aclose()


def describe(stream_id: str, **extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"stream_id": stream_id, "state": "running", "started_at": 1.0, "onsets": 0,
                    "received_s": 0.0, **extra}


async def listed(hub: RedisHub) -> dict[str, dict[str, Any]]:
    return {entry["stream_id"]: entry for entry in await hub.streams()}


async def test_the_subscriber_limit_counts_every_instance(make_hub: MakeHub) -> None:
    a, b = await make_hub("a", max_subscribers=2), await make_hub("b", max_subscribers=2)
    a.announce("s1", describe("s1"))

    async def on_b() -> bool:
        return "s1" in await listed(b)

    await until(on_b)
    first = await b.subscribe("s1", 8)
    second = await a.subscribe("s1", 8)
    with pytest.raises(SubscriberLimit):
        await b.subscribe("s1", 8)
    with pytest.raises(SubscriberLimit):
        await a.subscribe("s1", 8)
    assert (await b.describe("s1"))["subscribers"] == 2
    assert (await a.describe("s1"))["instance"] == "a"
    first.close()

    async def room() -> bool:
        return (await a.describe("s1"))["subscribers"] == 1

    await until(room)
    third = await b.subscribe("s1", 8)
    second.close()
    third.close()
    with pytest.raises(UnknownStream):
        await b.subscribe("no-such-stream", 8)


async def test_a_slow_subscriber_elsewhere_overflows_alone(make_hub: MakeHub) -> None:
    a, b = await make_hub("a"), await make_hub("b")
    a.announce("s2", describe("s2"))
    slow = await b.subscribe("s2", 4)
    fast = await b.subscribe("s2", 64)
    for n in range(20):
        a.publish("s2", msg.onset("s2", n * 0.1, 1.0, 0.0))  # never waits for Redis or subscribers

    async def arrived() -> bool:
        return slow.dropped_total == 16 and len(fast) == 20

    await until(arrived)
    got = [await slow.get() for _ in range(5)]
    assert [event["time"] for event in got[:4]] == [0.0, 0.1, 0.2, pytest.approx(0.3)]
    assert got[4] == {"type": "overflow", "stream_id": "s2", "dropped": 16}
    assert [(await fast.get())["time"] for _ in range(20)] == pytest.approx([n * 0.1 for n in range(20)])
    a.end("s2", msg.ended("s2", "stopped", 2.0, 20))
    assert await slow.get() == msg.ended("s2", "stopped", 2.0, 20)  # the final event always fits
    assert await slow.get() is None and (await fast.get())["type"] == "ended"

    async def gone() -> bool:
        return "s2" not in await listed(a) and "s2" not in await listed(b)

    await until(gone)
    slow.close()
    fast.close()


async def test_a_stream_whose_instance_stops_refreshing_it_expires(make_hub: MakeHub) -> None:
    a, b = await make_hub("a", ttl_s=0.6), await make_hub("b", ttl_s=0.6)
    a.announce("s3", describe("s3", onsets=3, received_s=1.5))
    watcher = await b.subscribe("s3", 8)
    await a.close()  # stops refreshing, as a crashed instance would, without withdrawing the stream

    async def gone() -> bool:
        return "s3" not in await listed(b)

    await until(gone)
    ended = await asyncio.wait_for(watcher.get(), WAIT_S)
    assert ended == msg.ended("s3", EXPIRED, 1.5, 3)
    assert await watcher.get() is None
    watcher.close()
