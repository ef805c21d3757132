"""Lossy round trips through PyAV (Opus in Ogg, MP3), with the codec delay measured and removed."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from scipy import signal

Audio = npt.NDArray[np.float32]

CODECS = {"opus": ("ogg", "libopus"), "mp3": ("mp3", "libmp3lame")}
MAX_DELAY_S = 0.2


def encode_decode(x: Audio, rate_hz: int, codec: str, bitrate: int) -> Audio:
    """Encode ``x`` (n, channels) and decode it again, same shape; raw codec delay still in."""
    import av

    fmt, name = CODECS[codec]
    channels = x.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(name, rate=rate_hz, layout=layout)
        assert isinstance(stream, av.AudioStream)
        stream.bit_rate = bitrate
        hop = 960 if codec == "opus" else 1152
        pts = 0
        for i in range(0, len(x), hop):
            chunk = np.ascontiguousarray(x[i: i + hop].T.astype(np.float32))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate_hz
            frame.pts = pts
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    pieces = []
    with av.open(buf, "r") as inp:
        for frame in inp.decode(audio=0):
            a = frame.to_ndarray()
            a = a.reshape(channels, -1) if frame.format.is_planar else a.reshape(-1, channels).T
            pieces.append(a.astype(np.float32))
    return np.concatenate(pieces, axis=1).T


def delay_samples(reference: Audio, decoded: Audio, rate_hz: int) -> int:
    """Lag (samples, >= 0) at which ``decoded`` best matches ``reference``, by cross-correlation."""
    a = reference.mean(axis=1)
    b = decoded.mean(axis=1)[: len(a) + int(MAX_DELAY_S * rate_hz)]
    corr = signal.fftconvolve(b, a[::-1], mode="full")[len(a) - 1:]
    return int(np.argmax(corr[: int(MAX_DELAY_S * rate_hz)]))


def round_trip(x: Audio, rate_hz: int, codec: str, bitrate: int) -> tuple[Audio, int]:
    """Encode, decode, remove the measured delay, trim or pad to ``len(x)``; returns (audio, delay)."""
    y = encode_decode(x, rate_hz, codec, bitrate)
    lag = delay_samples(x, y, rate_hz)
    y = y[lag: lag + len(x)]
    if len(y) < len(x):
        y = np.concatenate([y, np.zeros((len(x) - len(y), y.shape[1]), np.float32)])
    return y.astype(np.float32), lag
