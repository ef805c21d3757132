"""The pure parts of WebRTC ingest: frame decoding and downmix, resampling, the RTP time line, ICE config."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from server.webrtc.audio import MonoResampler, downmix, frame_samples, frame_to_mono
from server.webrtc.consumer import FrameConverter
from server.webrtc.ice import IceConfigError, parse_ice_servers
from server.webrtc.timeline import Placement, RtpTimeline

TB_48K = fractions.Fraction(1, 48000)


def opus_like_frame(left: np.ndarray, right: np.ndarray, pts: int | None = 0) -> av.AudioFrame:
    """A frame as aiortc's Opus decoder yields it: s16, packed stereo, 48 kHz, shape (1, 2n)."""
    interleaved = np.stack([left, right], axis=1).reshape(1, -1).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = TB_48K
    return frame


def test_packed_stereo_frame_is_deinterleaved_and_averaged() -> None:
    n = 960
    left = np.full(n, 16384, np.int16)
    right = np.zeros(n, np.int16)
    right[::2] = -16384
    frame = opus_like_frame(left, right)
    assert frame.to_ndarray().shape == (1, 2 * n)  # reading this as mono would be half-speed audio
    samples = frame_samples(frame)
    assert samples.shape == (n, 2)
    np.testing.assert_array_equal(samples[:, 0], left)
    np.testing.assert_array_equal(samples[:, 1], right)
    mono = frame_to_mono(frame)
    assert mono.shape == (n,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono[::2], 0.0)
    np.testing.assert_allclose(mono[1::2], 0.25)


def test_planar_and_float_formats() -> None:
    data = np.array([[0.5, -0.5, 1.0], [0.5, 0.5, -1.0]], np.float32)  # (channels, samples)
    frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
    np.testing.assert_allclose(frame_to_mono(frame), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(downmix(np.array([[0], [128], [255]], np.uint8), "u8"),
                               [-1.0, 0.0, 127 / 128])
    full = downmix(np.array([[32767, 32767], [-32768, -32768]], np.int16), "s16")
    assert np.all(np.abs(full) <= 1.0)  # identical full-scale channels stay in range


@pytest.mark.parametrize("rate_hz", [8000, 16000, 44100, 48000])
def test_resampler_keeps_times_and_length(rate_hz: int) -> None:
    resampler = MonoResampler(rate_hz, 48000)
    signal = np.zeros(rate_hz, np.float32)
    signal[rate_hz // 2] = 1.0  # an impulse at 0.5 s
    step = rate_hz // 50
    outputs = [resampler.push(signal[i:i + step]) for i in range(0, rate_hz, step)]
    if rate_hz != 48000:
        assert 0 < len(outputs[0]) < 960  # the first output block is short
    out = np.concatenate([*outputs, resampler.flush()])
    assert len(out) == 48000
    assert int(np.argmax(np.abs(out))) == 24000


def test_timeline_fills_gaps_and_trims_overlaps() -> None:
    line = RtpTimeline(48000)
    assert line.place(123456, TB_48K, 960) == Placement()  # the first frame anchors the time line
    assert line.place(123456 + 960, TB_48K, 960) == Placement()
    # Three frames lost: 2880 samples of silence before this one.
    assert line.place(123456 + 5 * 960, TB_48K, 960) == Placement(silence=2880)
    assert line.end == 6 * 960 and line.inserted == 2880
    # A duplicate frame lies wholly in the past; a half-overlapping one loses its head.
    assert line.place(123456 + 5 * 960, TB_48K, 960) == Placement(skip=960)
    assert line.place(123456 + 5 * 960 + 480, TB_48K, 960) == Placement(skip=480)
    assert line.end == 6 * 960 + 480


def test_timeline_treats_a_huge_jump_as_a_discontinuity() -> None:
    line = RtpTimeline(48000, max_gap_s=10.0)
    line.place(0, TB_48K, 960)
    placement = line.place(960 + 48000 * 3600, TB_48K, 960)
    assert placement.silence == 0 and placement.jump_s == pytest.approx(3600.0)
    assert line.place(2 * 960 + 48000 * 3600, TB_48K, 960) == Placement()  # continues after the jump
    assert line.end == 3 * 960


def test_timeline_other_clock_rates() -> None:
    line = RtpTimeline(8000)
    tb = fractions.Fraction(1, 8000)
    line.place(0, tb, 160)
    assert line.place(480, tb, 160) == Placement(silence=320)


def test_converter_places_audio_on_the_rtp_clock() -> None:
    """Frames with a gap in their time stamps come out with the gap filled: an impulse after the gap
    lands at its RTP time, not earlier."""
    converter = FrameConverter(48000)
    zeros = np.zeros(960, np.int16)
    impulse = zeros.copy()
    impulse[100] = 20000
    out: list[np.ndarray] = []
    for index in [0, 1, 2, 7, 8]:  # frames 3..6 (80 ms) never arrive
        samples = impulse if index == 8 else zeros
        for block, _ in converter.convert(opus_like_frame(samples, samples, pts=1000 + index * 960)):
            out.append(block)
    audio = np.concatenate(out)
    assert len(audio) == 9 * 960
    assert int(np.argmax(audio)) == 8 * 960 + 100


def test_ice_servers_parse_and_validate() -> None:
    empty = parse_ice_servers("")
    assert empty.servers == () and empty.rtc_configuration().iceServers == []  # never aiortc's default
    ice = parse_ice_servers("stun:stun.example.org, turn:turn.example.org:3479?transport=tcp,"
                            "stun:second.example.org", "user", "secret")
    assert [s.urls for s in ice.servers] == ["stun:stun.example.org",
                                             "turn:turn.example.org:3479?transport=tcp"]
    assert ice.servers[1].username == "user" and ice.servers[1].credential == "secret"
    assert ice.ignored == ("stun:second.example.org",)
    for bad in ["http://example.org", "stun:", "stun:host:99999", "stun:host?transport=udp",
                "turns:host?transport=udp"]:
        with pytest.raises(IceConfigError, match="ice_servers"):
            parse_ice_servers(bad, "u", "p")
    with pytest.raises(IceConfigError, match="ice_username"):
        parse_ice_servers("turn:turn.example.org")


def test_converter_reports_a_clock_jump_instead_of_filling_it() -> None:
    jumps: list[tuple[float, float]] = []
    converter = FrameConverter(48000, max_gap_s=1.0,
                               on_jump=lambda at_s, jump_s: jumps.append((at_s, jump_s)))
    zeros = np.zeros(960, np.int16)
    total = 0
    for pts in [0, 960, 960 * 2 + 48000 * 5, 960 * 3 + 48000 * 5]:
        total += sum(len(block) for block, _ in converter.convert(opus_like_frame(zeros, zeros, pts=pts)))
    assert total == 4 * 960
    assert jumps == [(0.04, 5.0)]
