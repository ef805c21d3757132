"""A receive jitter buffer for analysis: each audio packet goes to the decoder as soon as it arrives.

aiortc's audio jitter buffer holds four complete frames before it releases the oldest (80 ms of Opus)
and releases at most one frame per packet received. After a lost packet it waits until it has 16
packets, then goes on releasing one per packet: every later frame is held 300 ms, for the rest of the
connection (measured: onset latency went from about 100 ms to about 300 ms after one lost packet).
Playback needs that smoothing; onset analysis does not, since the time line follows the RTP clock and
fills what is missing with silence (:mod:`server.webrtc.timeline`).

:class:`ImmediateJitterBuffer` releases every packet when it arrives, in sequence order: a packet ahead of
the next expected one gives up the hole before it (the missing audio becomes silence), and a late or
duplicate packet is dropped (its audio too). Each audio RTP packet is one whole frame, so nothing waits.
"""

from __future__ import annotations

import logging

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

SEQUENCE_MODULUS = 1 << 16
MAX_LATE_PACKETS = 100  # a packet further behind than this means the sender restarted its sequence
_RECEIVER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"  # where aiortc keeps a receiver's buffer
JITTER_BUFFERS = ("immediate", "aiortc")


def sequence_delta(sequence: int, expected: int) -> int:
    """``sequence - expected`` modulo 2**16, as a signed difference in -32768..32767."""
    return (sequence - expected + SEQUENCE_MODULUS // 2) % SEQUENCE_MODULUS - SEQUENCE_MODULUS // 2


class ImmediateJitterBuffer(JitterBuffer):
    """Audio packets out as they come in, never held; late and duplicate packets dropped."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._expected: int | None = None  # sequence number of the next packet in order
        self.late = 0  # packets dropped for arriving after a later one
        self.skipped = 0  # packets given up as lost

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        expected = self._expected
        if expected is not None:
            delta = sequence_delta(sequence, expected)
            if -MAX_LATE_PACKETS <= delta < 0:
                self.late += 1
                return False, None
            if delta > 0:
                self.skipped += delta
        self._expected = (sequence + 1) % SEQUENCE_MODULUS
        data: bytes = getattr(packet, "_data", b"")  # the depayloaded codec frame (set by the receiver)
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def install(receiver: RTCRtpReceiver, kind: str) -> bool:
    """Give an audio ``receiver`` an :class:`ImmediateJitterBuffer` (before any packet arrives).

    ``False`` (and aiortc's own buffer stays) if aiortc no longer keeps its buffer where expected.
    """
    if kind != "audio":
        return False
    if not isinstance(getattr(receiver, _RECEIVER_ATTRIBUTE, None), JitterBuffer):
        log.warning("aiortc's receiver has no jitter buffer at %s; keeping aiortc's own", _RECEIVER_ATTRIBUTE)
        return False
    setattr(receiver, _RECEIVER_ATTRIBUTE, ImmediateJitterBuffer())
    return True
