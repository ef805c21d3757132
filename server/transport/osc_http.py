"""``GET /api/v3/osc/targets``: the names of the server's configured OSC targets, so a client (the live page)
can offer them for a stream's ``osc`` option. Addresses stay on the server: a client only ever names a target
(docs/protocol.md, "OSC output")."""

from __future__ import annotations

from aiohttp import web

from server import appkeys


async def list_targets(request: web.Request) -> web.Response:
    streams = request.app.get(appkeys.STREAMS)
    targets = streams.osc.targets if streams is not None else {}
    return web.json_response({"targets": [
        {"name": target.name, "bundle": target.bundle, "delay_ms": target.delay_ms}
        for target in sorted(targets.values(), key=lambda target: target.name)]})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v3/osc/targets", list_targets)
