"""One live stream's binary audio messages as samples clipped to full scale, checked in few numpy calls.

Every 20 ms chunk of every stream comes through here on the event loop, so the usual chunk (``pcm_f32le``,
a whole number of frames, every sample finite and within [-1, 1]) is proven so by one bitwise ``and`` into
a scratch array (one for all streams) and one maximum: a float32's bits without the sign bit, read as an
unsigned integer, are at most those of 1.0 exactly when the float is finite and within [-1, 1] (±Inf and
every NaN have the largest exponent, so larger bits). Anything else goes through
:func:`~server.protocol.stream_messages.parse_audio` (its errors) and
:func:`~server.dsp.blocks.clip_full_scale` (the clipped count).
"""

from __future__ import annotations

import numpy as np

from server.dsp.blocks import clip_full_scale
from server.protocol.stream_messages import AudioFormat, Encoding, parse_audio

F32 = np.dtype("<f4")
U32 = np.dtype("<u4")
MAGNITUDE_BITS = 0x7FFFFFFF  # a float32's bits without its sign bit
ONE_BITS = 0x3F800000  # the bits of float32 1.0


def decode_audio(data: bytes, audio_format: AudioFormat) -> tuple[np.ndarray, int]:
    """One binary audio message as ``(frames, channels)`` samples clipped to full scale, and how many were.

    Raises the non-fatal :class:`~server.protocol.errors.ProtocolError` of ``parse_audio`` for a bad
    length or NaN/Inf samples (the message is then rejected whole).
    """
    return clip_full_scale(parse_audio(data, audio_format))


class DecodeScratch:
    """The scratch array of the usual chunk's check, one for every decoder of an event loop: they run one at
    a time and keep nothing in it between calls, so hundreds of streams need one array, not one each (a
    20 ms chunk of 48 kHz mono: 3.75 KiB a stream). It grows to the largest message seen, never shrinks."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = np.empty(0, U32)

    def take(self, samples: int) -> np.ndarray:
        """A scratch array of ``samples`` uint32 (its contents are left over from earlier calls)."""
        if len(self._bits) < samples:
            self._bits = np.empty(samples, U32)
        return self._bits[:samples]


class AudioDecoder:
    """:func:`decode_audio` for the messages of one stream of ``audio_format``, with the usual chunk checked
    by two numpy calls into ``scratch`` (shared by the decoders of one event loop; by default its own)."""

    __slots__ = ("_channels", "_f32", "_format", "_frame_bytes", "_scratch")

    def __init__(self, audio_format: AudioFormat, scratch: DecodeScratch | None = None) -> None:
        self._format = audio_format
        self._f32 = audio_format.encoding is Encoding.PCM_F32LE
        self._frame_bytes = audio_format.frame_bytes
        self._channels = audio_format.channels
        self._scratch = scratch if scratch is not None else DecodeScratch()

    def __call__(self, data: bytes) -> tuple[np.ndarray, int]:
        """``(samples, clipped)`` as :func:`decode_audio` gives them, and raising as it does."""
        if self._f32 and data and not len(data) % self._frame_bytes:
            bits = np.frombuffer(data, U32)
            scratch = self._scratch.take(len(bits))
            np.bitwise_and(bits, MAGNITUDE_BITS, out=scratch)
            if np.maximum.reduce(scratch) <= ONE_BITS:
                return bits.view(F32).reshape(-1, self._channels), 0
        return decode_audio(data, self._format)
