"""``GET /api/v3/link``: the server's Ableton Link session as it sees it (docs/protocol.md, "Ableton Link"):
whether it is in one, how many other peers it sees, the session's tempo and which stream publishes to it."""

from __future__ import annotations

from aiohttp import web

from server import appkeys


async def link_state(request: web.Request) -> web.Response:
    streams = request.app.get(appkeys.STREAMS)
    state = streams.link.state() if streams is not None else None
    if state is None:
        return web.json_response({"enabled": False, "peers": None, "tempo_bpm": None, "stream_id": None})
    return web.json_response({"enabled": True, "peers": state.peers, "tempo_bpm": round(state.tempo_bpm, 3),
                              "stream_id": state.stream_id})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v3/link", link_state)
