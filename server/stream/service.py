"""The live-stream service: opens sessions, runs the batch scheduler and the status sweep, ends everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from server.config import Config
from server.events.hub import EventHub
from server.events.link import LinkOutput, check_link
from server.events.osc import OscSender, check_targets
from server.exceptions import SettingsError
from server.pool import DetectionPool
from server.protocol.errors import CloseCode, ProtocolError
from server.protocol.stream_messages import AudioFormat
from server.stream.dispatch_rule import DispatchRule
from server.stream.in_worker import WARM_UP_RATES_HZ
from server.stream.registry import StreamRegistry
from server.stream.scheduler import BatchScheduler
from server.stream.session import StreamLinks, StreamSession, StreamSink, buffer_plan
from server.stream.settings import StreamSettings, warm_up_timing
from server.stream.sweep import sweep_streams


class StreamService:
    """Everything a transport needs to run live streams: ``open`` a session, feed it, stop it."""

    def __init__(self, config: Config, pool: DetectionPool, hub: EventHub) -> None:
        self.config = config
        self.hub = hub
        self.registry = StreamRegistry(config.max_streams, config.max_streams_per_client)
        self.scheduler = BatchScheduler(pool, rule=DispatchRule(
            config.dispatch_interval_ms, config.dispatch_per_stream_ms, config.max_dispatch_interval_ms))
        self.osc = OscSender.from_spec(config.osc_targets)  # a malformed --osc-targets stops start-up
        self.link = LinkOutput(config.link)
        self._tasks: list[asyncio.Task[None]] = []
        self.on_onset: Callable[[float], None] | None = None  # observer of onset latencies (metrics)

    async def start(self) -> None:
        config = self.config
        warm_up_timing(WARM_UP_RATES_HZ)  # before any stream: the first one's start pays no one-off cost
        await self.osc.start()
        await self.link.start()
        self._tasks = [
            asyncio.create_task(self.scheduler.run(), name="stream-scheduler"),
            asyncio.create_task(
                sweep_streams(self.registry, config.status_interval_s, config.idle_timeout_s),
                name="stream-sweep"),
        ]

    async def close(self) -> None:
        for session in self.registry:
            session.abandon("shutdown")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.osc.close()
        await self.link.close()

    def limits(self) -> dict[str, Any]:
        """The limits a publisher should know, as sent in ``started``."""
        config = self.config
        return {
            "max_message_bytes": config.max_message_bytes,
            "max_buffer_s": config.max_buffer_s,
            "max_stream_buffer_bytes": config.max_stream_buffer_bytes,
            "idle_timeout_s": config.idle_timeout_s,
            "status_interval_s": config.status_interval_s,
        }

    def open(self, audio_format: AudioFormat, settings: Mapping[str, Any], sink: StreamSink, *,
             client: str, transport: str) -> StreamSession:
        """A new running session, listed and announced. Raises a fatal :class:`ProtocolError`."""
        self.registry.check_room(client)
        try:
            stream_settings = StreamSettings.from_mapping(settings)
            check_targets(self.osc, stream_settings.options.osc)
            check_link(self.link, stream_settings.options.link)
        except SettingsError as exc:
            raise ProtocolError("bad_settings", str(exc), CloseCode.INVALID_PAYLOAD) from None
        config = self.config
        capacity, channels, dtype = buffer_plan(audio_format, config.max_buffer_s,
                                                config.max_stream_buffer_bytes)
        held = sum(session.buffer_bytes for session in self.registry)
        if held + capacity * channels * dtype.itemsize > config.max_buffer_bytes:
            raise ProtocolError("buffer_limit", "the live streams' audio buffers would pass "
                                f"max_buffer_bytes ({config.max_buffer_bytes} bytes); try again later",
                                CloseCode.TRY_AGAIN_LATER)
        links = StreamLinks(self.hub, self.scheduler.notify, self._ended, self.osc, self.on_onset,
                            self.link if self.link.enabled else None)
        session = StreamSession(
            self.registry.new_id(), audio_format, stream_settings, max_buffer_s=config.max_buffer_s,
            sink=sink, links=links, lane=self.scheduler.assign(), client=client, transport=transport,
            max_buffer_bytes=config.max_stream_buffer_bytes)
        self.registry.add(session)
        self.hub.announce(session.stream_id, session.describe)
        return session

    def _ended(self, session: StreamSession) -> None:
        self.registry.remove(session)
        self.scheduler.release(session.lane, session.detector_key if session.holds_detector else None)
