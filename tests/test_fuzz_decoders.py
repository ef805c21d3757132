"""Property tests: the protocol decoders and settings validation raise only their documented errors."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
import numpy as np
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.dsp import DetectorSettings
from server.exceptions import SettingsError
from server.protocol import stream_messages, upload_messages
from server.protocol.codec import Audio, Codec, Control, decode_frame
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import AudioFormat, Encoding
from server.stream.settings import StreamSettings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SETTING_NAMES = ["method", "threshold", "min_interval_ms", "silence_db", "lookahead_ms", "frame_ms", "hop_ms",
                 "odf", "osc", "type", "sample_rate", "channels", "encoding", "settings", "size", "filename",
                 "data", "bogus"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=20),
    st.sampled_from(["superflux", "complex", "hfc", "energy", "pcm_f32le", "pcm_s16le", "start", "stop",
                     "configure", "upload", "end", "audio"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=5), inner,
                                                 max_size=4)), max_leaves=12)
mappings = st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=8), values, max_size=6)
kinds = st.sampled_from(["start", "configure", "stop", "upload", "end", "audio", "x"]) | st.text()
messages = st.builds(lambda body, kind: {**body, "type": kind}, mappings, kinds)


def _control_or_none(codec: Codec, kind: WSMsgType, data: str | bytes) -> Control | Audio | None:
    try:
        return decode_frame(codec, kind, data)
    except ProtocolError as exc:
        assert exc.code and exc.message
        return None


@FUZZ
@given(st.sampled_from(list(Codec)), st.sampled_from([WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING,
                                                      WSMsgType.CLOSE]),
       st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 messages.map(lambda m: json.dumps(m, default=repr)),
                 messages.map(lambda m: msgpack.packb(m, use_bin_type=True, default=repr))))
def test_decode_frame_raises_only_protocol_errors(codec: Codec, kind: WSMsgType, data: str | bytes) -> None:
    if kind is WSMsgType.TEXT and isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    frame = _control_or_none(codec, kind, data)
    if isinstance(frame, Control):
        assert isinstance(frame.type, str)


@FUZZ
@given(messages)
def test_message_parsers_raise_only_protocol_errors(message: dict[str, Any]) -> None:
    control = Control(message["type"], message)
    for parse in (stream_messages.parse_client_message, upload_messages.parse_client_message):
        try:
            parse(control)  # type: ignore[operator]
        except ProtocolError as exc:
            assert exc.code and exc.message


@FUZZ
@given(st.binary(max_size=256), st.sampled_from(list(Encoding)), st.integers(min_value=1, max_value=8))
def test_parse_audio_rejects_odd_lengths_and_non_finite_samples(data: bytes, encoding: Encoding,
                                                                channels: int) -> None:
    audio_format = AudioFormat(16000, channels, encoding)
    try:
        samples = stream_messages.parse_audio(data, audio_format)
    except ProtocolError as exc:
        assert exc.code in ("bad_audio_length", "bad_samples") and not exc.fatal
        if exc.code == "bad_samples":
            assert not np.isfinite(np.frombuffer(data, encoding.dtype)).all()
        return
    assert samples.shape == (len(data) // audio_format.frame_bytes, channels)
    assert np.isfinite(samples.astype(np.float64)).all()


@FUZZ
@given(mappings)
def test_settings_validation_raises_only_settings_errors(values: dict[str, Any]) -> None:
    try:
        detector = DetectorSettings.from_mapping(values)
    except SettingsError as exc:
        assert exc.name is not None
    else:
        assert DetectorSettings.from_mapping(detector.to_dict()) == detector
    try:
        stream = StreamSettings.from_mapping(values)
    except SettingsError:
        pass
    else:
        assert StreamSettings.from_mapping(stream.to_dict()) == stream
    for base in (None, StreamSettings.from_mapping({})):
        with contextlib.suppress(SettingsError):
            StreamSettings.from_mapping(values.get("settings", values), base=base)
