"""The aiohttp application factory: app state in typed keys, background resources in ``cleanup_ctx``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from server import appkeys
from server.config import Config
from server.pool import DetectionPool
from server.security import access
from server.transport import (
    health,
    http_analysis,
    http_errors,
    osc_http,
    static_files,
    streams_http,
    webrtc_http,
    ws_shutdown,
    ws_stream,
    ws_upload,
)
from server.transport import metrics as metrics_endpoint


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = DetectionPool(app[appkeys.CONFIG].workers)
    app[appkeys.POOL] = pool
    await pool.start()
    yield
    await pool.close()


def make_app(config: Config) -> web.Application:
    """Build the server's application for ``config``. Nothing starts until the app runs."""
    app = web.Application(client_max_size=1 << 20)
    app[appkeys.CONFIG] = config
    app.cleanup_ctx.append(_pool_ctx)
    if config.redis:  # scale-out: the hub and the job service come from Redis (docs/deploy.md)
        from server.scale import backend

        backend.setup(app)
    http_errors.setup(app)
    metrics_endpoint.setup(app)  # the metric set first: the access middleware counts refusals in it
    access.setup(app)
    ws_shutdown.setup(app)
    health.setup(app)
    ws_stream.setup(app)
    streams_http.setup(app)
    osc_http.setup(app)
    webrtc_http.setup(app)
    http_analysis.setup(app)
    ws_upload.setup(app)
    static_files.setup(app)  # last: a catch-all for GET, below every more specific route
    return app
