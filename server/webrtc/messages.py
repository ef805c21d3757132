"""``POST /api/v3/webrtc/offer``: its request parsed once into :class:`OfferRequest`, its refusals as
:class:`OfferRefused` (an HTTP status and an error code), its answer as a dict.

See docs/protocol.md, section "WebRTC".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import sdp

from server.exceptions import TransientError
from server.protocol.codec import clip, parse_json
from server.protocol.errors import ProtocolError

MAX_SDP_CHARS = 64 * 1024  # a browser's offer is a few kilobytes
SUPPORTED_KINDS = frozenset({"audio", "application"})
SENDING_DIRECTIONS = frozenset({"sendrecv", "sendonly"})
# Hash functions of a=fingerprint (RFC 8122) that the DTLS handshake can verify (aiortc's), with their
# digest lengths in bytes. A fingerprint in any other hash is ignored by the handshake, as RFC 8122 allows.
VERIFIABLE_FINGERPRINTS = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
FINGERPRINT_RE = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*$")


class OfferRefused(TransientError):
    """The offer is not accepted: answer HTTP ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True, slots=True)
class OfferRequest:
    """A parsed offer: the SDP (with one audio track sent by the client, and perhaps a data channel) and
    the stream's settings (validated later, with the stream's)."""

    sdp: str
    settings: Mapping[str, Any]
    has_data_channel: bool


def _bad(code: str, message: str) -> OfferRefused:
    return OfferRefused(400, code, message)


def check_fingerprints(kind: str, fingerprints: list[tuple[str, str]]) -> None:
    """Refuse DTLS fingerprints that no certificate can match: each must be colon-separated hex bytes (of
    its hash's length, for a hash the handshake verifies), and at least one in such a hash.

    Otherwise the handshake fails only once ICE has connected, and the stream lingers until
    ``webrtc_connect_timeout_s``.
    """
    verifiable = 0
    for algorithm, value in fingerprints:
        length = VERIFIABLE_FINGERPRINTS.get(algorithm.lower())
        if not FINGERPRINT_RE.match(value) or (length is not None and len(value) != 3 * length - 1):
            raise _bad("bad_sdp", f"the offer's {kind} section has a malformed DTLS fingerprint "
                       f"{clip(algorithm, 20)!r} {clip(value, 200)!r} (expected {algorithm} as "
                       "colon-separated hex bytes of the hash's length)")
        verifiable += length is not None
    if not verifiable:
        raise _bad("bad_sdp", f"the offer's {kind} section has no DTLS fingerprint in a hash the server can "
                   f"verify ({', '.join(VERIFIABLE_FINGERPRINTS)})")


def check_media(text: str) -> bool:
    """Check the offer's media sections; ``True`` when it has a data channel section.

    The offer must send exactly one audio track; other media (video) are refused rather than ignored.
    """
    if not text.lstrip().startswith("v="):
        # aiortc's parser skips lines it does not know, so any text parses as a session without media
        # (which would be refused as no_audio_track); RFC 8866 §5: a description begins with "v=".
        raise _bad("bad_sdp", f"the offer's SDP cannot be parsed: it must begin with a 'v=' line, got "
                   f"{clip(text.lstrip(), 40)!r}")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises assorted types on malformed SDP
        raise _bad("bad_sdp", f"the offer's SDP cannot be parsed: {type(exc).__name__}: {exc}") from None
    kinds = [media.kind for media in description.media]
    unsupported = sorted(set(kinds) - SUPPORTED_KINDS)
    if unsupported:
        raise _bad("unsupported_media", f"the offer has {', '.join(unsupported)} media; only one audio track "
                   "and the 'events' data channel are accepted")
    for media in description.media:
        # aiortc accepts an offer without these and fails later, inside its connection task.
        if media.dtls is None or not media.dtls.fingerprints:
            raise _bad("bad_sdp", f"the offer's {media.kind} section has no DTLS fingerprint and setup "
                       "attributes (a=fingerprint, a=setup)")
        check_fingerprints(media.kind, [(f.algorithm, f.value) for f in media.dtls.fingerprints])
    sending = [m for m in description.media if m.kind == "audio" and m.direction in SENDING_DIRECTIONS]
    if len(sending) != 1:
        raise _bad("no_audio_track" if not sending else "too_many_tracks",
                   f"the offer sends {len(sending)} audio tracks; it must send exactly one "
                   "(add the microphone track before creating the offer)")
    return "application" in kinds


def parse_offer(body: bytes) -> OfferRequest:
    """Parse the request body; raises :class:`OfferRefused` (400) naming the problem."""
    try:
        obj = parse_json(body)
    except ProtocolError as exc:
        raise _bad(exc.code, f"the body is not acceptable JSON: {exc.message}") from None
    if not isinstance(obj, Mapping):
        raise _bad("bad_request", "the body must be a JSON object with 'sdp', 'type' and optional 'settings'")
    unknown = sorted(set(obj) - {"sdp", "type", "settings"})
    if unknown:
        raise _bad("bad_request", f"unknown field(s) {unknown}; expected 'sdp', 'type', 'settings'")
    if obj.get("type") != "offer":
        raise _bad("bad_request", f"'type' must be \"offer\", got {obj.get('type')!r}")
    text = obj.get("sdp")
    if not isinstance(text, str) or not text.strip():
        raise _bad("bad_sdp", "'sdp' must be a non-empty string (the offer's session description)")
    if len(text) > MAX_SDP_CHARS:
        raise _bad("bad_sdp", f"'sdp' has {len(text)} characters; at most {MAX_SDP_CHARS} are accepted")
    settings = obj.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise _bad("bad_settings", f"'settings' must be an object, got {settings!r}")
    return OfferRequest(text, settings, check_media(text))


def answer_body(description_sdp: str, stream_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"sdp": description_sdp, "type": "answer", "stream_id": stream_id, **extra}
