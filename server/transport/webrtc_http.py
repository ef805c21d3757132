"""``POST /api/v3/webrtc/offer``: a client's SDP offer in, the server's answer and the stream's id out.

The client's audio track then streams like a WebSocket publisher; events and control messages travel on
its ``events`` data channel. See docs/protocol.md, section "WebRTC".
"""

from __future__ import annotations

from aiohttp import web

from server import appkeys
from server.security.expect import guard_expect
from server.transport.body_timeout import BODY_CLOCKS, BodyTimeout, refusal
from server.webrtc.messages import OfferRefused, parse_offer


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
        return refusal(exc)
    return web.json_response(answer)


def setup(app: web.Application) -> None:
    """Route the offer endpoint to the WebRTC service (:data:`~server.appkeys.WEBRTC`, built in app.py)."""
    app.router.add_post("/api/v3/webrtc/offer", offer_handler, expect_handler=guard_expect())
