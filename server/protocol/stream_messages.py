"""Messages of the live-stream endpoint (``/api/v3/stream``) and its subscribers, parsed once into types.

Client → server: ``start``, ``configure``, ``stop`` (control messages) and audio (raw interleaved
little-endian PCM). Server → client messages are built here too, so every field name lives in one module.
The layout of each message is documented in docs/protocol.md, section "Live streams".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from server.dsp import detector
from server.dsp.methods import detector_info
from server.protocol.codec import Control
from server.protocol.encoding import Encoding
from server.protocol.errors import CloseCode, ProtocolError

# One source for the audio limits: the detector's (server.dsp.detector). A live stream accepts the
# detector's whole rate range, but at most 32 channels, the documented public limit of ``start``
# (docs/protocol.md); the detector itself, and so whole-file analysis, takes up to its own 64.
MIN_SAMPLE_RATE_HZ = detector.MIN_RATE_HZ
MAX_SAMPLE_RATE_HZ = detector.MAX_RATE_HZ
MAX_CHANNELS = min(32, detector.MAX_CHANNELS)

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What a stream's binary frames hold."""

    sample_rate: int
    channels: int
    encoding: Encoding

    @property
    def frame_bytes(self) -> int:
        """Bytes of one interleaved frame (one sample per channel)."""
        return self.channels * self.encoding.bytes_per_sample


@dataclass(frozen=True, slots=True)
class Start:
    format: AudioFormat
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Configure:
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Activity without audio (a paused publisher): resets the idle timeout; no reply."""


@dataclass(frozen=True, slots=True)
class Flush:
    """Analyse everything received so far and send its onsets, then ``flushed``; the stream goes on."""


ClientMessage = Start | Configure | Stop | Keepalive | Flush


def _fields(control: Control, allowed: frozenset[str]) -> None:
    # msgpack maps may have keys of any type (bytes, integers): each is an unknown field, named as text
    unknown = sorted(str(key) for key in control.body if key not in allowed and key != "type")
    if unknown:
        raise ProtocolError("bad_message", f"{control.type!r} message has unknown field(s) {unknown}",
                            CloseCode.INVALID_PAYLOAD)


def _settings(control: Control, fatal: bool) -> Mapping[str, Any]:
    """``start``'s optional ``settings`` (absent or ``null``: none given) or ``configure``'s (an object)."""
    settings = control.body.get("settings", {})
    if settings is None and fatal:
        return {}
    if not isinstance(settings, Mapping):
        raise ProtocolError("bad_settings", f"'settings' must be an object, got {settings!r}",
                            CloseCode.INVALID_PAYLOAD if fatal else None)
    return settings


def _integer(control: Control, name: str, low: int, high: int) -> int:
    if name not in control.body:
        raise ProtocolError("bad_start", f"'start' needs {name!r}", CloseCode.INVALID_PAYLOAD)
    value = control.body[name]
    # A float must be whole and finite: int() of NaN or ±Infinity (JSON's NaN, Infinity, 1e400; msgpack's
    # floats) raised past the handler, which then closed the socket 1000 with no error.
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))):
        raise ProtocolError("bad_start", f"{name!r} must be an integer, got {value!r}",
                            CloseCode.INVALID_PAYLOAD)
    if not low <= value <= high:
        raise ProtocolError("unsupported_format", f"{name!r}={value!r} is outside {low}..{high}",
                            CloseCode.UNSUPPORTED_DATA)
    return int(value)


def _start(control: Control) -> Start:
    _fields(control, frozenset({"sample_rate", "channels", "encoding", "settings"}))
    sample_rate = _integer(control, "sample_rate", MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
    channels = _integer(control, "channels", 1, MAX_CHANNELS)
    raw = control.body.get("encoding")
    try:
        encoding = Encoding(raw)
    except ValueError:
        names = ", ".join(repr(e.value) for e in Encoding)
        raise ProtocolError("unsupported_format", f"unknown encoding {raw!r}; use one of {names}",
                            CloseCode.UNSUPPORTED_DATA) from None
    return Start(AudioFormat(sample_rate, channels, encoding), _settings(control, fatal=True))


def _configure(control: Control) -> Configure:
    try:
        _fields(control, frozenset({"settings"}))
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, None) from None
    if "settings" not in control.body:
        raise ProtocolError("bad_settings", "'configure' needs 'settings'", None)
    return Configure(_settings(control, fatal=False))


def _stop(control: Control) -> Stop:
    return Stop()


def _keepalive(control: Control) -> Keepalive:
    return Keepalive()


def _flush(control: Control) -> Flush:
    return Flush()


# The parser of each client message, by its ``type``. A new message: its dataclass above, its parser here,
# its meaning in server.stream.control.
PARSERS: Mapping[str, Callable[[Control], ClientMessage]] = MappingProxyType({
    "start": _start,
    "configure": _configure,
    "keepalive": _keepalive,
    "flush": _flush,
    "stop": _stop,
})
_EXPECTED = f"{', '.join(list(PARSERS)[:-1])} or {list(PARSERS)[-1]}"


def parse_client_message(control: Control) -> ClientMessage:
    """The typed form of a publisher's control message.

    Raises :class:`ProtocolError`: unknown types are a non-fatal ``unknown_type``; a malformed ``start``
    is fatal; a malformed ``configure`` is not (the stream keeps its settings).
    """
    parse = PARSERS.get(control.type)
    if parse is None:
        raise ProtocolError("unknown_type", f"unknown message type {control.type!r}; expected {_EXPECTED}",
                            None)
    return parse(control)


def parse_audio(data: bytes, audio_format: AudioFormat) -> np.ndarray:
    """Interleaved PCM bytes as a read-only ``(frames, channels)`` array of the format's dtype.

    Raises a non-fatal :class:`ProtocolError` for a length that is not a whole number of frames and for
    NaN or infinite float samples; the frame is then rejected as a whole.
    """
    frame_bytes = audio_format.frame_bytes
    if len(data) % frame_bytes:
        raise ProtocolError(
            "bad_audio_length",
            f"audio frame of {len(data)} bytes is not a multiple of {frame_bytes} bytes "
            f"({audio_format.channels} channel(s) × {audio_format.encoding.bytes_per_sample} bytes); "
            "frame rejected", None)
    samples = np.frombuffer(data, dtype=audio_format.encoding.dtype).reshape(-1, audio_format.channels)
    if audio_format.encoding is Encoding.PCM_F32LE and not np.isfinite(samples).all():
        raise ProtocolError("bad_samples", "audio frame holds NaN or infinite samples; frame rejected", None)
    return samples


# --- Server → client -------------------------------------------------------------------------------------


def started(stream_id: str, audio_format: AudioFormat, settings: Mapping[str, Any], latency_s: float,
            hop_s: float, limits: Mapping[str, Any]) -> Event:
    return {
        "type": "started",
        "stream_id": stream_id,
        "sample_rate": audio_format.sample_rate,
        "channels": audio_format.channels,
        "encoding": audio_format.encoding.value,
        "settings": dict(settings),
        "latency_ms": round(latency_s * 1000.0, 6),
        "hop_ms": round(hop_s * 1000.0, 6),
        "limits": dict(limits),
        "detector": detector_info(settings["method"]),
    }


def onset(stream_id: str, time_s: float, strength: float, wall_time_s: float, band: str | None = None
          ) -> Event:
    """An onset; ``band`` ("low", "mid", "high") when the stream tracks rhythm (setting ``beats``)."""
    event: Event = {"type": "onset", "stream_id": stream_id, "time": time_s, "strength": strength,
                    "wall_time": round(wall_time_s, 6)}
    if band is not None:
        event["band"] = band
    return event


def beat(stream_id: str, time_s: float, bpm: float, confidence: float, wall_time_s: float,
         bar_position: int | None = None) -> Event:
    """A beat the tracker committed to: ``time_s`` on the stream's timeline, ``bpm`` beats per minute;
    ``bar_position`` (1 = downbeat) only once the meter is known."""
    event: Event = {"type": "beat", "stream_id": stream_id, "time": round(time_s, 6), "bpm": round(bpm, 3),
                    "confidence": round(confidence, 4), "wall_time": round(wall_time_s, 6)}
    if bar_position is not None:
        event["bar_position"] = bar_position
    return event


def status(stream_id: str, *, received_s: float, analysed_s: float, lag_s: float, dropped_s: float,
           onsets: int, tempo: tuple[float, float, float] | None = None) -> Event:
    """``tempo``: (bpm, confidence, next beat's stream time s), or None when no tempo is known."""
    return {
        "type": "status",
        "stream_id": stream_id,
        "received_s": round(received_s, 6),
        "analysed_s": round(analysed_s, 6),
        "lag_s": round(lag_s, 6),
        "dropped_s": round(dropped_s, 6),
        "onsets": onsets,
        "tempo": None if tempo is None else {"bpm": round(tempo[0], 3), "confidence": round(tempo[1], 4),
                                             "next_beat_time": round(tempo[2], 6)},
    }


def odf(stream_id: str, start_s: float, hop_s: float, values: list[float]) -> Event:
    return {"type": "odf", "stream_id": stream_id, "start": start_s, "hop_s": hop_s, "values": values}


def ack(stream_id: str, *, received_s: float, analysed_s: float, lag_s: float, dropped_s: float) -> Event:
    """Flow control (stream option ``ack``): what has been received and analysed, to the publisher only."""
    return {"type": "ack", "stream_id": stream_id, "received_s": round(received_s, 6),
            "analysed_s": round(analysed_s, 6), "lag_s": round(lag_s, 6), "dropped_s": round(dropped_s, 6)}


def flushed(stream_id: str, *, received_s: float, analysed_s: float, onsets: int) -> Event:
    """The answer to ``flush``, to the publisher only, after the onsets it decided."""
    return {"type": "flushed", "stream_id": stream_id, "received_s": round(received_s, 6),
            "analysed_s": round(analysed_s, 6), "onsets": onsets}


def warning(stream_id: str, code: str, message: str, **fields: Any) -> Event:
    return {"type": "warning", "stream_id": stream_id, "code": code, "message": message, **fields}


def configured(settings: Mapping[str, Any]) -> Event:
    return {"type": "configured", "settings": dict(settings), "detector": detector_info(settings["method"])}


def stopped(duration_s: float, onsets: int, dropped_s: float = 0.0) -> Event:
    return {"type": "stopped", "duration": round(duration_s, 6), "onsets": onsets,
            "dropped_s": round(dropped_s, 6)}


def subscribed(stream: Mapping[str, Any]) -> Event:
    return {"type": "subscribed", "stream": dict(stream)}


def ended(stream_id: str, reason: str, duration_s: float, onsets: int) -> Event:
    return {"type": "ended", "stream_id": stream_id, "reason": reason, "duration": round(duration_s, 6),
            "onsets": onsets}
