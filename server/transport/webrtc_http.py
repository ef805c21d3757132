"""``POST /api/v3/webrtc/offer``: a client's SDP offer in, the server's answer and the stream's id out.

The client's audio track then streams like a WebSocket publisher; events and control messages travel on
its ``events`` data channel. See docs/protocol.md, section "WebRTC".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from server import appkeys
from server.security.expect import guard_expect
from server.transport.body_timeout import BODY_CLOCKS, BodyTimeout
from server.webrtc.ice import parse_ice_servers
from server.webrtc.jitter import JITTER_BUFFERS
from server.webrtc.messages import OfferRefused, parse_offer
from server.webrtc.service import WebRtcService

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _refused(exc: OfferRefused) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return web.json_response(exc.to_body(), status=exc.status, headers=headers)


async def offer_handler(request: web.Request) -> web.Response:
    service = request.app[appkeys.WEBRTC]
    try:
        with request.app[BODY_CLOCKS].clock(request.app[appkeys.CONFIG]) as clock:
            body = await clock.read(request.read())
        offer = parse_offer(body)
        answer = await service.accept(offer, request.remote or "")
    except OfferRefused as exc:
        return _refused(exc)
    except BodyTimeout as exc:
        refused = (OfferRefused(503, "shutting_down", str(exc), 5) if exc.shutting_down
                   else OfferRefused(408, "body_timeout", str(exc)))
        response = _refused(refused)
        response.force_close()
        return response
    return web.json_response(answer)


def _ctx(ice_servers: str, username: str, credential: str) -> CleanupContext:
    ice = parse_ice_servers(ice_servers, username, credential)  # a bad option fails make_app, not a request
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


def setup(app: web.Application) -> None:
    """Route the offer endpoint; call after the live-stream transport's ``setup`` (its service is used)."""
    config = app[appkeys.CONFIG]
    if config.webrtc_jitter_buffer not in JITTER_BUFFERS:
        raise ValueError(f"webrtc_jitter_buffer: {config.webrtc_jitter_buffer!r} is not one of "
                         f"{', '.join(JITTER_BUFFERS)}")
    app.cleanup_ctx.append(_ctx(config.ice_servers, config.ice_username, config.ice_credential))
    app.router.add_post("/api/v3/webrtc/offer", offer_handler, expect_handler=guard_expect())
