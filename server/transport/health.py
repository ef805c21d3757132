"""``GET /healthz``: the process is up and its detection pool answers."""

from __future__ import annotations

import time

from aiohttp import web

from server import __version__, appkeys

STARTED_AT = web.AppKey("started_at_monotonic_s", float)


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    pool = app[appkeys.POOL]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
            "pool_workers": pool.workers,
            "pool_rebuilds": pool.rebuilds,
        }
    )


def setup(app: web.Application) -> None:
    app[STARTED_AT] = time.monotonic()
    app.router.add_get("/healthz", healthz)
