"""The event hub: where live streams announce themselves and publish events, and subscribers find them.

:class:`EventHub` is the interface; :class:`LocalHub` is the embedded, in-process implementation. A hub
that spans instances (e.g. over Redis pub/sub) implements the same methods: ``publish`` and ``end`` are
synchronous and must never block the publisher (queue and forward in the background); the directory
(``streams``, ``describe``) and ``subscribe`` are coroutines so they may ask another service.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from server.events.subscription import Subscription
from server.exceptions import TransientError
from server.protocol.stream_messages import Event

Describe = Callable[[], dict[str, Any]]


class UnknownStream(TransientError, LookupError):
    """No live stream has this id (it never existed or has ended)."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"no live stream {stream_id!r}")


class SubscriberLimit(TransientError):
    """The stream already has as many subscribers as it accepts."""

    def __init__(self, stream_id: str, limit: int) -> None:
        self.stream_id = stream_id
        self.limit = limit
        super().__init__(f"stream {stream_id!r} already has {limit} subscribers, the most it accepts")


class EventHub(abc.ABC):
    """Publish/subscribe of live-stream events plus the directory of live streams."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to whatever the hub needs; the local hub needs nothing."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    def announce(self, stream_id: str, describe: Describe) -> None:
        """List a new live stream; ``describe()`` returns its current listing entry (JSON-compatible)."""

    @abc.abstractmethod
    def publish(self, stream_id: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber of the stream. Never blocks."""

    @abc.abstractmethod
    def end(self, stream_id: str, event: Event) -> None:
        """Deliver the stream's final event to every subscriber and withdraw the stream."""

    @abc.abstractmethod
    async def subscribe(self, stream_id: str, queue_limit: int) -> Subscription:
        """A new subscription; raises :class:`UnknownStream` or :class:`SubscriberLimit`."""

    @abc.abstractmethod
    async def streams(self) -> list[dict[str, Any]]:
        """Listing entries of every live stream."""

    @abc.abstractmethod
    async def describe(self, stream_id: str) -> dict[str, Any]:
        """One stream's listing entry; raises :class:`UnknownStream`."""


class LocalHub(EventHub):
    """Streams and subscribers of this process only."""

    def __init__(self, max_subscribers_per_stream: int) -> None:
        self.max_subscribers_per_stream = max_subscribers_per_stream
        self._describe: dict[str, Describe] = {}
        self._subscribers: dict[str, set[Subscription]] = {}

    def announce(self, stream_id: str, describe: Describe) -> None:
        if stream_id in self._describe:
            raise ValueError(f"stream {stream_id!r} is already announced")
        self._describe[stream_id] = describe
        self._subscribers[stream_id] = set()

    def publish(self, stream_id: str, event: Event) -> None:
        for subscription in self._subscribers.get(stream_id, ()):
            subscription.offer(event)

    def end(self, stream_id: str, event: Event) -> None:
        self._describe.pop(stream_id, None)
        for subscription in self._subscribers.pop(stream_id, ()):
            subscription.finish(event)

    def _forget(self, subscription: Subscription) -> None:
        self._subscribers.get(subscription.stream_id, set()).discard(subscription)

    async def subscribe(self, stream_id: str, queue_limit: int) -> Subscription:
        subscribers = self._subscribers.get(stream_id)
        if subscribers is None:
            raise UnknownStream(stream_id)
        if len(subscribers) >= self.max_subscribers_per_stream:
            raise SubscriberLimit(stream_id, self.max_subscribers_per_stream)
        subscription = Subscription(stream_id, queue_limit, self._forget)
        subscribers.add(subscription)
        return subscription

    def _entry(self, stream_id: str, describe: Describe) -> dict[str, Any]:
        return {**describe(), "subscribers": len(self._subscribers.get(stream_id, ()))}

    async def streams(self) -> list[dict[str, Any]]:
        return [self._entry(stream_id, describe) for stream_id, describe in self._describe.items()]

    async def describe(self, stream_id: str) -> dict[str, Any]:
        describe = self._describe.get(stream_id)
        if describe is None:
            raise UnknownStream(stream_id)
        return self._entry(stream_id, describe)
