"""A server instance on Redis: the hub and the job service ``make_app`` uses when ``--redis`` is given.

:func:`setup` adds a cleanup context after the detection pool's. It connects to Redis, starts this
process's pub/sub listener and provides :data:`~server.appkeys.HUB` (a
:class:`~server.scale.hub.RedisHub`) and :data:`~server.appkeys.JOBS` (a job service on the Redis store and
queue, with a local worker unless ``--no-worker``); the live-stream and analysis contexts start and stop
them as they do the embedded ones. One :class:`~server.scale.availability.Availability` is shared by all of
them: a Redis outage is noticed and logged once, and every Redis-backed request fails fast while it lasts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server import appkeys
from server.config import Config
from server.jobs.service import JobService
from server.pool import DetectionPool
from server.scale.availability import Availability
from server.scale.client import Redis, connect, instance_id, redacted
from server.scale.hub import RedisHub
from server.scale.job_queue import RedisJobQueue
from server.scale.job_store import RedisJobStore
from server.scale.keys import Keys
from server.scale.listener import Listener
from server.scale.options import check_scale_options, shared_config

log = logging.getLogger(__name__)

OUTAGE_EFFECT = ("file tasks are refused (503, WebSocket close 1013) and other instances' streams cannot be "
                 "watched until it answers; live streams here go on")


class SharedJobService(JobService):
    """The job service on Redis. Start-up recovery is the queue's business here: a job cut short by a
    crash is taken over by another worker (``XAUTOCLAIM``), and the upload directory is shared, so no
    instance may re-queue others' jobs or delete files it does not know."""

    async def recover(self) -> None:
        return None


class ScaleOut:
    """One instance's Redis client, pub/sub listener, hub and job service."""

    def __init__(self, config: Config, client: Redis, pool: DetectionPool) -> None:
        config = shared_config(config)
        keys = Keys(config.redis_prefix)
        self.config = config
        self.client = client
        self.instance = instance_id()
        self.availability = Availability(client, f"Redis at {redacted(config.redis)}", OUTAGE_EFFECT)
        self.listener = Listener(client, self.availability)
        self.hub = RedisHub(client, self.listener, keys, instance=self.instance,
                            max_subscribers_per_stream=config.max_subscribers_per_stream,
                            stream_ttl_s=config.redis_stream_ttl_s, availability=self.availability)
        self.queue = RedisJobQueue(client, keys, consumer=self.instance,
                                   claim_idle_s=config.redis_claim_idle_s,
                                   max_deliveries=config.redis_max_deliveries,
                                   retention_s=config.retention_s, on_failed=self._remove_files,
                                   availability=self.availability)
        store = RedisJobStore(client, keys, config.retention_s, check_uploads=True,
                              holder=f"instance {self.instance}", availability=self.availability)
        self.jobs = SharedJobService(config, store, self.queue, None if config.no_worker else pool)
        self._keys = keys

    @classmethod
    async def connect(cls, config: Config, pool: DetectionPool) -> ScaleOut:
        check_scale_options(config)
        scale = cls(config, await connect(config.redis), pool)
        await scale.listener.start(scale._keys.job_changes, scale._job_changed)
        log.info("scale-out on Redis %s as instance %s (%s)", redacted(config.redis), scale.instance,
                 "serving only" if config.no_worker else "serving and running file jobs")
        return scale

    def _job_changed(self, channel: str, data: bytes) -> None:
        self.jobs.watch.notify(data.decode(errors="replace"))

    async def _remove_files(self, task_id: str) -> None:
        await asyncio.to_thread(self.jobs.uploads.remove_job_files, task_id)

    async def close(self) -> None:
        await self.queue.close()
        await self.listener.close()
        await self.availability.close()
        await self.client.aclose()


SCALE = web.AppKey("scale_out", ScaleOut)


async def scale_ctx(app: web.Application) -> AsyncIterator[None]:
    scale = await ScaleOut.connect(app[appkeys.CONFIG], app[appkeys.POOL])
    app[SCALE] = scale
    app[appkeys.HUB] = scale.hub
    app[appkeys.JOBS] = scale.jobs
    yield
    await scale.close()


def setup(app: web.Application) -> None:
    """Provide the Redis hub and job service; call after the pool's context, before the transports'."""
    app.cleanup_ctx.append(scale_ctx)
