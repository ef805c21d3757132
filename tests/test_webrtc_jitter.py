"""The immediate jitter buffer: every packet out on arrival, holes given up, late packets dropped."""

from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from server.webrtc import jitter
from server.webrtc.jitter import ImmediateJitterBuffer, sequence_delta


def packet(sequence: int, timestamp: int) -> RtpPacket:
    out = RtpPacket(payload_type=111, sequence_number=sequence, timestamp=timestamp)
    out._data = bytes([sequence % 256])  # type: ignore[attr-defined]  # set by aiortc's receiver
    return out


def released(buffer: ImmediateJitterBuffer, sequence: int) -> int | None:
    _, frame = buffer.add(packet(sequence, sequence * 960 % (1 << 32)))
    return None if frame is None else frame.timestamp // 960


def test_sequence_delta_wraps() -> None:
    assert sequence_delta(5, 3) == 2
    assert sequence_delta(1, 65535) == 2
    assert sequence_delta(65535, 1) == -2
    assert sequence_delta(3, 3) == 0


def test_in_order_packets_are_released_at_once() -> None:
    buffer = ImmediateJitterBuffer()
    assert [released(buffer, s) for s in range(100, 110)] == list(range(100, 110))


def test_holes_are_skipped_and_late_packets_dropped() -> None:
    buffer = ImmediateJitterBuffer()
    order = [1, 2, 5, 3, 6, 6, 7, 4, 8]  # 3 and 4 arrive after 5; 6 twice
    assert [released(buffer, s) for s in order] == [1, 2, 5, None, 6, None, 7, None, 8]
    assert buffer.skipped == 2 and buffer.late == 3


def test_sequence_wrap_and_restart() -> None:
    buffer = ImmediateJitterBuffer()
    assert [released(buffer, s) for s in [65534, 65535, 0, 1]] == [65534, 65535, 0, 1]
    assert released(buffer, 30000) == 30000  # far away: a restarted sequence, not a late packet
    assert released(buffer, 30001) == 30001


async def test_installed_on_audio_receivers_only() -> None:
    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio", direction="recvonly")
        video = pc.addTransceiver("video", direction="recvonly")
        assert jitter.install(audio.receiver, "audio")
        assert not jitter.install(video.receiver, "video")
        assert isinstance(audio.receiver._RTCRtpReceiver__jitter_buffer, ImmediateJitterBuffer)
    finally:
        await pc.close()
