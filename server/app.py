"""The aiohttp application factory and the one composition root: every service (pool, event hub, stream,
WebRTC and job services) is built here and kept in typed app keys; the transports only route to them.

Background resources live in ``cleanup_ctx``, started in this order and closed in reverse: the pool, the
scale-out backend (``--redis``: it provides the hub and the job service), the event hub and the stream
service, the WebRTC service (its peers close before the stream service stops), the job service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from server import appkeys
from server.config import Config
from server.events.hub import LocalHub
from server.jobs.queue import LocalJobQueue
from server.jobs.service import JobService
from server.jobs.sqlite_store import SQLiteJobStore
from server.pool import DetectionPool
from server.pool.heap import HeapTrim, trim_every
from server.security import access
from server.stream.in_worker import warm_up
from server.stream.service import StreamService
from server.transport import (
    health,
    http_analysis,
    http_errors,
    link_http,
    osc_http,
    static_files,
    streams_http,
    webrtc_http,
    ws_shutdown,
    ws_stream,
    ws_upload,
)
from server.transport import metrics as metrics_endpoint
from server.transport.warm_up import warm_up_ingest
from server.webrtc.ice import parse_ice_servers
from server.webrtc.jitter import JITTER_BUFFERS
from server.webrtc.service import WebRtcService

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The detection pool, and the periodic return of this process's freed heap memory (its workers
    return theirs after their calls): both with ``heap_trim_interval_s``."""
    config = app[appkeys.CONFIG]
    pool = DetectionPool(config.workers, config.heap_trim_interval_s, warm_up, config.sched_policy)
    app[appkeys.POOL] = pool
    await pool.start()
    heap = HeapTrim(config.heap_trim_interval_s)
    trimming = asyncio.create_task(trim_every(heap), name="heap-trim") if heap.active else None
    yield
    if trimming is not None:
        trimming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trimming
    await pool.close()


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    """The event hub and the stream service (scheduler, status sweep) live while the app runs."""
    config = app[appkeys.CONFIG]
    # With --redis the scale-out context (server.scale.backend) has provided a hub spanning instances.
    hub = app[appkeys.HUB] if appkeys.HUB in app else LocalHub(config.max_subscribers_per_stream)
    await hub.start()
    app[appkeys.HUB] = hub
    service = StreamService(config, app[appkeys.POOL], hub)
    app[appkeys.STREAMS] = service
    await service.start()
    warm_up_ingest(asyncio.get_running_loop())  # the first stream's socket code, run before any stream
    yield
    await service.close()
    await hub.close()


def _webrtc_ctx(config: Config) -> CleanupContext:
    """The WebRTC service's context; a bad WebRTC option fails :func:`make_app`, not a request."""
    if config.webrtc_jitter_buffer not in JITTER_BUFFERS:
        raise ValueError(f"webrtc_jitter_buffer: {config.webrtc_jitter_buffer!r} is not one of "
                         f"{', '.join(JITTER_BUFFERS)}")
    ice = parse_ice_servers(config.ice_servers, config.ice_username, config.ice_credential)
    for url in ice.ignored:
        log.warning("ice_servers: %s is not used (aiortc uses the first STUN and the first TURN URL, "
                    "and no stuns:)", url)

    async def webrtc_ctx(app: web.Application) -> AsyncIterator[None]:
        """The WebRTC service lives while the app runs; it closes every peer connection on shutdown,
        before the stream service stops (its cleanup runs after this one)."""
        service = WebRtcService(app[appkeys.CONFIG], app[appkeys.STREAMS], ice)
        app[appkeys.WEBRTC] = service
        yield
        await service.close()

    return webrtc_ctx


async def _jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job service (SQLite store, local queue, runner on the shared pool) lives while the app runs."""
    config = app[appkeys.CONFIG]
    # With --redis the scale-out context (server.scale.backend) has provided a service on Redis.
    service = app[appkeys.JOBS] if appkeys.JOBS in app else JobService(
        config, SQLiteJobStore(config.data_dir / "jobs.sqlite3"), LocalJobQueue(), app[appkeys.POOL])
    app[appkeys.JOBS] = service
    await service.start()
    yield
    await service.close()


def make_app(config: Config) -> web.Application:
    """Build the server's application for ``config``. Nothing starts until the app runs."""
    app = web.Application(client_max_size=1 << 20)
    app[appkeys.CONFIG] = config
    app.cleanup_ctx.append(_pool_ctx)
    if config.redis:  # scale-out: the hub and the job service come from Redis (docs/deploy.md)
        from server.scale import backend

        backend.setup(app)
    webrtc_ctx = _webrtc_ctx(config)
    app.cleanup_ctx.extend((_streams_ctx, webrtc_ctx, _jobs_ctx))
    http_errors.setup(app)
    metrics_endpoint.setup(app)  # the metric set first: the access middleware counts refusals in it
    access.setup(app)
    ws_shutdown.setup(app)
    health.setup(app)
    ws_stream.setup(app)
    streams_http.setup(app)
    osc_http.setup(app)
    link_http.setup(app)
    webrtc_http.setup(app)
    http_analysis.setup(app)
    ws_upload.setup(app)
    static_files.setup(app)  # last: a catch-all for GET, below every more specific route
    return app
