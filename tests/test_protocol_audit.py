"""Promises of docs/protocol.md that a client written from the document alone found broken (branch docaudit).

- WebRTC offer: an ``sdp`` that is not a session description at all is ``bad_sdp`` (it was
  ``no_audio_track``).
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer


@pytest.mark.parametrize("sdp", ["garbage", "hello\r\nworld\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"])
async def test_an_offer_that_is_no_session_description_is_bad_sdp(server: TestServer,
                                                                   http: aiohttp.ClientSession,
                                                                   sdp: str) -> None:
    async with http.post(server.make_url("/api/v3/webrtc/offer"), json={"sdp": sdp, "type": "offer"}) as r:
        body = await r.json()
    assert (r.status, body["error"]["code"]) == (400, "bad_sdp"), body
