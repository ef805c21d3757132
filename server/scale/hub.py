"""The event hub across instances: live events over Redis pub/sub, the stream directory in Redis.

A stream's audio and detector stay on the instance that receives it; only its events (a few small JSON
objects a second) and its listing entry cross Redis. Subscribers on the stream's own instance get events
straight from the publisher, as with the embedded hub. A subscriber elsewhere makes its instance subscribe
to the stream's channel (one Redis subscription per instance and stream, however many subscribers), and
the instance fans the events out to its local subscribers' bounded queues.

Events are delivered at most once: an event published while an instance is cut off from Redis is lost for
that instance's subscribers (the stream itself goes on). If a stream's instance dies, its entry expires
after ``stream_ttl_s`` and subscribers elsewhere receive ``ended`` with reason ``expired``.

While this instance cannot reach Redis (:mod:`server.scale.availability`) its own streams and their local
subscribers go on untouched; listings show this instance's streams only; subscribing to a stream elsewhere
raises :class:`~server.exceptions.StorageUnavailable`; and once the outage has lasted ``stream_ttl_s``
(the longest a stream elsewhere could have gone unnoticed) the subscribers here of streams elsewhere get
``ended`` with reason ``storage_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import Counter
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from server.events.hub import Describe, EventHub, SubscriberLimit, UnknownStream
from server.events.subscription import Subscription
from server.exceptions import StorageUnavailable
from server.protocol import stream_messages as msg
from server.protocol.stream_messages import Event
from server.scale.availability import Availability
from server.scale.client import Redis
from server.scale.directory import FULL, UNKNOWN, StreamDirectory
from server.scale.keys import Keys
from server.scale.listener import Listener
from server.scale.outbox import RedisOutbox

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 20_000  # operations waiting for Redis before events are dropped
MAX_REFRESH_INTERVAL_S = 1.0  # listing entries (and their counters) are at most this old
MISSED_REFRESHES = 2  # a watched stream absent this many heartbeats in a row has expired
CLOSE_FLUSH_S = 5.0  # how long closing waits for queued events and withdrawals to reach Redis
EXPIRED = "expired"  # `ended` reason when the stream's instance stopped refreshing it
UNAVAILABLE = "storage_unavailable"  # `ended` reason when this instance lost Redis for stream_ttl_s


def _dumps(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"))


class RedisHub(EventHub):
    def __init__(self, client: Redis, listener: Listener, keys: Keys, *, instance: str,
                 max_subscribers_per_stream: int, stream_ttl_s: float,
                 availability: Availability | None = None) -> None:
        self.keys = keys
        self.instance = instance
        self.max_subscribers_per_stream = max_subscribers_per_stream
        self.availability = availability or Availability(client)
        self.directory = StreamDirectory(client, keys, stream_ttl_s)
        self.stream_ttl_s = stream_ttl_s
        self.refresh_interval_s = min(MAX_REFRESH_INTERVAL_S, stream_ttl_s / 3)
        self.outbox = RedisOutbox(client, OUTBOX_LIMIT, self.availability)
        self._listener = listener
        self._describe: dict[str, Describe] = {}  # streams running here
        self._subscribers: dict[str, set[Subscription]] = {}  # subscribers here, of streams anywhere
        self._members: dict[Subscription, str] = {}  # their entries in the streams' subscriber sets
        self._channels: dict[Subscription, str] = {}  # channels held for subscribers of remote streams
        self._last_entry: dict[str, dict[str, Any]] = {}  # remote streams watched here: last entry seen
        self._missed: Counter[str] = Counter()
        self._serial = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.outbox.run(), name="redis-hub-outbox"),
                       asyncio.create_task(self._heartbeat(), name="redis-hub-heartbeat")]

    async def close(self) -> None:
        await self.outbox.flush(CLOSE_FLUSH_S)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the publisher's side (never blocks) -----------------------------------------------------------

    def announce(self, stream_id: str, describe: Describe) -> None:
        if stream_id in self._describe:
            raise ValueError(f"stream {stream_id!r} is already announced")
        self._describe[stream_id] = describe
        self._subscribers.setdefault(stream_id, set())
        self._queue_refresh(stream_id)

    def publish(self, stream_id: str, event: Event) -> None:
        for subscription in self._subscribers.get(stream_id, ()):
            subscription.offer(event)
        channel, data = self.keys.events(stream_id), _dumps(event)
        self.outbox.put(lambda pipe: pipe.publish(channel, data))

    def end(self, stream_id: str, event: Event) -> None:
        self._describe.pop(stream_id, None)
        for subscription in self._subscribers.pop(stream_id, ()):
            subscription.finish(event)
        self.outbox.put(lambda pipe: self.directory.queue_end(pipe, stream_id, event), essential=True)

    def _queue_refresh(self, stream_id: str) -> None:
        def refresh(pipe: Pipeline) -> None:
            describe = self._describe.get(stream_id)
            if describe is None:
                return  # ended meanwhile; its withdrawal follows in the queue
            members = [self._members[s] for s in self._subscribers.get(stream_id, ()) if s in self._members]
            entry = {**describe(), "instance": self.instance}
            self.directory.queue_refresh(pipe, stream_id, entry, members)

        self.outbox.put(refresh, essential=True)

    # --- subscribers -----------------------------------------------------------------------------------

    async def subscribe(self, stream_id: str, queue_limit: int) -> Subscription:
        local = stream_id in self._describe
        channel = None if local else self.keys.events(stream_id)
        if channel is not None:
            with self.availability.guard():
                await self._listener.acquire(channel, self._on_message)
        subscription = Subscription(stream_id, queue_limit, self._forget)
        # Registered before joining, so an `ended` arriving meanwhile finishes it rather than being missed.
        self._subscribers.setdefault(stream_id, set()).add(subscription)
        if channel is not None:
            self._channels[subscription] = channel
        member = f"{self.instance}:{next(self._serial)}"
        try:
            with self.availability.guard():
                joined = await self.directory.join(stream_id, member, self.max_subscribers_per_stream,
                                                   listed=not local)
        except StorageUnavailable:
            if channel is not None:
                subscription.close()
                raise
            log.debug("redis unavailable, counting subscribers of %s on this instance only", stream_id)
            local_count = len(self._subscribers.get(stream_id, ()))
            joined = FULL if local_count > self.max_subscribers_per_stream else local_count
            member = ""
        except BaseException:
            subscription.close()
            raise
        if joined in (UNKNOWN, FULL):
            subscription.close()
            if joined == UNKNOWN:
                raise UnknownStream(stream_id)
            raise SubscriberLimit(stream_id, self.max_subscribers_per_stream)
        if member:
            self._members[subscription] = member
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        stream_id = subscription.stream_id
        subscribers = self._subscribers.get(stream_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers and stream_id not in self._describe:
                del self._subscribers[stream_id]
                self._last_entry.pop(stream_id, None)
                self._missed.pop(stream_id, None)
        member = self._members.pop(subscription, None)
        if member is not None:
            self.outbox.put(lambda pipe: self.directory.queue_leave(pipe, stream_id, member), essential=True)
        channel = self._channels.pop(subscription, None)
        if channel is not None:
            self._listener.release(channel)

    def _on_message(self, channel: str, data: bytes) -> None:
        stream_id = self.keys.stream_id_of(channel)
        if stream_id is None or stream_id in self._describe:
            return  # subscribers of a stream running here get its events from the publisher directly
        event: Event = json.loads(data)
        if event.get("type") == "ended":
            self._finish_remote(stream_id, event)
            return
        for subscription in self._subscribers.get(stream_id, ()):
            subscription.offer(event)

    def _finish_remote(self, stream_id: str, event: Event) -> None:
        for subscription in self._subscribers.pop(stream_id, ()):
            subscription.finish(event)
        self._last_entry.pop(stream_id, None)
        self._missed.pop(stream_id, None)

    # --- the directory ---------------------------------------------------------------------------------

    def _local_entry(self, stream_id: str, describe: Describe, subscribers: int) -> dict[str, Any]:
        return {**describe(), "instance": self.instance, "subscribers": subscribers}

    async def streams(self) -> list[dict[str, Any]]:
        try:
            with self.availability.guard():
                listed = await self.directory.list()
        except StorageUnavailable:
            listed = []  # this instance's streams only
        entries: dict[str, dict[str, Any]] = {}
        for entry in listed:
            stream_id = entry.get("stream_id")
            if isinstance(stream_id, str) and (entry.get("instance") != self.instance
                                               or stream_id in self._describe):
                entries[stream_id] = entry
        for stream_id, describe in list(self._describe.items()):  # fresh figures for streams running here
            known = entries.get(stream_id)
            count = known["subscribers"] if known else len(self._subscribers.get(stream_id, ()))
            entries[stream_id] = self._local_entry(stream_id, describe, count)
        return sorted(entries.values(), key=lambda entry: (entry.get("started_at", 0.0), entry["stream_id"]))

    async def describe(self, stream_id: str) -> dict[str, Any]:
        local = self._describe.get(stream_id)
        try:
            with self.availability.guard():
                entry = await self.directory.describe(stream_id)
        except StorageUnavailable:
            if local is None:
                raise
            entry = None
        local = self._describe.get(stream_id)
        if local is not None:
            count = entry["subscribers"] if entry else len(self._subscribers.get(stream_id, ()))
            return self._local_entry(stream_id, local, count)
        if entry is None:
            raise UnknownStream(stream_id)
        return entry

    # --- keeping entries alive, noticing lost instances ------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            if self.availability.up:  # refreshes resume once Redis answers again
                for stream_id in list(self._describe):
                    self._queue_refresh(stream_id)  # in order with the stream's end
            try:
                await self._watch_remote()
            except StorageUnavailable:
                self._end_unconfirmed()
            except RedisError as exc:
                log.warning("heartbeat of watched streams failed: %s", exc)

    def _end_unconfirmed(self) -> None:
        """Once Redis has been unreachable for ``stream_ttl_s``, end the subscriptions here to streams
        running elsewhere: whether they still run can no longer be known."""
        if self.availability.down_for_s() < self.stream_ttl_s:
            return
        remote = [stream_id for stream_id in self._subscribers if stream_id not in self._describe]
        if remote:
            log.info("ending %d watched stream(s) of other instances: Redis unreachable for %.0f s",
                     len(remote), self.availability.down_for_s())
        for stream_id in remote:
            last = self._last_entry.get(stream_id, {})
            duration_s, onsets = float(last.get("received_s", 0.0)), int(last.get("onsets", 0))
            self._finish_remote(stream_id, msg.ended(stream_id, UNAVAILABLE, duration_s, onsets))

    async def _watch_remote(self) -> None:
        watched = [(stream_id, [self._members[s] for s in subscribers if s in self._members])
                   for stream_id, subscribers in self._subscribers.items()
                   if stream_id not in self._describe and subscribers]
        if not watched:
            return
        with self.availability.guard():
            entries = await self.directory.touch_remote(watched)
        for (stream_id, _), entry in zip(watched, entries, strict=True):
            if stream_id not in self._subscribers:
                continue  # ended while we asked
            if entry is not None:
                self._last_entry[stream_id] = entry
                self._missed.pop(stream_id, None)
                continue
            self._missed[stream_id] += 1
            if self._missed[stream_id] >= MISSED_REFRESHES:
                last = self._last_entry.get(stream_id, {})
                log.info("stream %s expired: its instance stopped refreshing it", stream_id)
                duration_s, onsets = float(last.get("received_s", 0.0)), int(last.get("onsets", 0))
                self._finish_remote(stream_id, msg.ended(stream_id, EXPIRED, duration_s, onsets))
