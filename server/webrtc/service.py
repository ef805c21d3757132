"""WebRTC ingest: turns an offer into a peer connection whose audio track drives a live-stream session.

The session comes from the live-stream service, so a WebRTC stream is listed in ``GET /api/v3/streams``,
is watchable at ``/api/v3/streams/{stream_id}/events`` and counts against ``max_streams`` like a
WebSocket one.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from server.config import Config
from server.exceptions import SettingsError
from server.protocol import stream_messages as msg
from server.protocol.errors import CloseCode, ProtocolError
from server.protocol.stream_messages import AudioFormat, Encoding
from server.stream.service import StreamService
from server.stream.settings import StreamSettings
from server.webrtc.ice import IceSettings, parse_ice_servers
from server.webrtc.messages import OfferRefused, OfferRequest, answer_body
from server.webrtc.peer import SESSION_RATE_HZ, WebRtcPeer
from server.webrtc.registry import PeerRegistry

AUDIO_FORMAT = AudioFormat(SESSION_RATE_HZ, 1, Encoding.PCM_F32LE)
RETRY_AFTER_S = 5  # suggested wait after a 503 (server full)


def refusal(error: ProtocolError) -> OfferRefused:
    """The HTTP form of the stream service's refusal to open a stream."""
    if error.close_code is CloseCode.TRY_AGAIN_LATER:
        return OfferRefused(503, error.code, error.message, RETRY_AFTER_S)
    if error.code == "client_stream_limit":
        return OfferRefused(429, error.code, error.message)
    return OfferRefused(400, error.code, error.message)


class WebRtcService:
    """The WebRTC publishers of this process and how new ones are admitted."""

    def __init__(self, config: Config, streams: StreamService, ice: IceSettings | None = None) -> None:
        self.config = config
        self.streams = streams
        self.ice = ice or parse_ice_servers(config.ice_servers, config.ice_username, config.ice_credential)
        self.peers = PeerRegistry()
        self._closing = False

    async def accept(self, offer: OfferRequest, client: str) -> dict[str, Any]:
        """Answer ``offer`` and start its stream; raises :class:`OfferRefused`."""
        if self._closing:
            raise OfferRefused(503, "shutting_down", "the server is shutting down", RETRY_AFTER_S)
        try:
            self.streams.registry.check_room(client)
            StreamSettings.from_mapping(offer.settings)
        except ProtocolError as exc:
            raise refusal(exc) from None
        except SettingsError as exc:
            raise OfferRefused(400, "bad_settings", str(exc)) from None
        config = self.config
        peer = WebRtcPeer(RTCPeerConnection(self.ice.rtc_configuration()),
                          connect_timeout_s=config.webrtc_connect_timeout_s,
                          max_lag_s=config.max_buffer_s / 2, on_closed=self.peers.remove,
                          jitter_buffer=config.webrtc_jitter_buffer)
        self.peers.add(peer)
        try:
            try:
                draft = await peer.apply_offer(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            except Exception as exc:  # aiortc raises assorted types for offers it cannot use
                raise OfferRefused(400, "bad_sdp", f"the offer cannot be used: {type(exc).__name__}: "
                                   f"{exc}") from None
            answer = await peer.make_answer(draft)
            try:
                session = self.streams.open(AUDIO_FORMAT, offer.settings, peer, client=client,
                                            transport="webrtc")
            except ProtocolError as exc:
                raise refusal(exc) from None
        except BaseException:
            await peer.close()
            raise
        peer.start(session)
        peer.deliver(msg.started(session.stream_id, session.format, session.settings.to_dict(),
                                 session.latency_s, session.hop_s, self.streams.limits()))
        return answer_body(answer.sdp, session.stream_id, {
            "settings": session.settings.to_dict(),
            "latency_ms": round(session.latency_s * 1000.0, 6),
            "sample_rate": SESSION_RATE_HZ,
            "data_channel": offer.has_data_channel,
        })

    async def close(self) -> None:
        """Refuse new offers and close every peer connection."""
        self._closing = True
        await self.peers.close_all()
