"""Decoded WebRTC audio frames to the mono float32 samples a stream session analyses.

aiortc's Opus decoder yields ``s16`` *packed* stereo frames at 48 kHz (``to_ndarray()`` has shape
``(1, 2 * samples)``, interleaved); other codecs yield other layouts and rates. :func:`frame_samples`
reads any of them as ``(samples, channels)``, :func:`downmix` averages the channels (FFmpeg's own
stereo-to-mono matrix scales by 1/√2 per channel, so identical full-scale channels would exceed ±1), and
:class:`MonoResampler` converts the rate when it is not the session's.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import av
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# Full scale of each integer sample format: a sample divided by it lies in [-1, 1).
_INT_FULL_SCALE = MappingProxyType({"s16": 32768.0, "s32": 2147483648.0})


def frame_samples(frame: av.AudioFrame) -> npt.NDArray[Any]:
    """The frame's samples as an array of shape ``(samples, channels)`` in the frame's own dtype."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:  # (channels, samples)
        return np.ascontiguousarray(data.T)
    return data.reshape(-1, channels)  # packed: (1, samples * channels), interleaved


def downmix(samples: npt.NDArray[Any], format_name: str) -> F32:
    """Mono float32 in [-1, 1] from ``samples`` of shape ``(n, channels)``: the mean of the channels.

    ``format_name`` is the FFmpeg sample format without its planar ``p`` (``s16``, ``s32``, ``flt``,
    ``dbl``, ``u8``), which fixes the integer scaling.
    """
    base = format_name.rstrip("p")
    if base == "u8":
        values = (samples.astype(np.float32) - 128.0) / 128.0
    elif base in _INT_FULL_SCALE:
        values = samples.astype(np.float32) / np.float32(_INT_FULL_SCALE[base])
    else:
        values = samples.astype(np.float32)
    mono = values[:, 0] if values.shape[1] == 1 else values.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def frame_to_mono(frame: av.AudioFrame) -> F32:
    """A decoded frame as mono float32 at the frame's own rate, shape ``(frame.samples,)``."""
    return downmix(frame_samples(frame), frame.format.name)


def silence(samples: int) -> F32:
    return np.zeros(samples, dtype=np.float32)


class MonoResampler:
    """Streaming rate conversion of mono float32 blocks from ``in_rate_hz`` to ``out_rate_hz``.

    Equal rates pass blocks through untouched. Otherwise FFmpeg's resampler holds back a few samples of
    filter history, so the first output block is short and the total output trails the input by that
    much until :meth:`flush`; output sample ``k`` is still at time ``k / out_rate_hz`` (no added delay).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._resampler = (None if in_rate_hz == out_rate_hz else
                           av.AudioResampler(format="flt", layout="mono", rate=out_rate_hz))
        self._pts = 0  # input samples pushed so far: contiguous time stamps for the filter graph

    def push(self, block: F32) -> F32:
        """Resample the next ``block`` (shape ``(n,)``); returns what the resampler released."""
        if self._resampler is None or len(block) == 0:
            return block
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.in_rate_hz
        frame.pts = self._pts
        self._pts += len(block)
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> F32:
        """The samples still held back (end of stream)."""
        if self._resampler is None:
            return silence(0)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> F32:
        if not frames:
            return silence(0)
        parts = [frame.to_ndarray().reshape(-1) for frame in frames]
        return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0], dtype=np.float32)
