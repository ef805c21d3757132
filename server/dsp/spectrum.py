"""Framing and short-time spectra: pure functions over float32 sample arrays.

Each frame's result depends only on that frame's samples, never on how many frames are computed together
(no BLAS; row-wise FFTs and reductions), so a stream analysed in any block sizes gives bitwise-identical
spectra.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt
import scipy.fft

Float32Array = npt.NDArray[np.float32]
Complex64Array = npt.NDArray[np.complex64]


@dataclasses.dataclass(frozen=True)
class FrameGrid:
    """The analysis grid of one stream, in samples.

    Frame ``i`` covers stream samples ``[(i + 1) * hop - frame_len, (i + 1) * hop)``; samples before the
    stream's first one are zeros.

    Attributes
    ----------
    sample_rate : int
        Samples per second.
    frame_len : int
        Window length, samples.
    hop : int
        Distance between consecutive frames, samples.
    fft_size : int
        FFT length (the next power of two at or above ``frame_len``), samples.
    """

    sample_rate: int
    frame_len: int
    hop: int
    fft_size: int

    @classmethod
    def from_seconds(cls, sample_rate: int, frame_s: float, hop_s: float) -> FrameGrid:
        """Grid for a rate and a frame and hop in seconds (rounded to whole samples)."""
        hop = max(1, round(hop_s * sample_rate))
        frame_len = max(2 * hop, round(frame_s * sample_rate))
        fft_size = 1 << (frame_len - 1).bit_length()
        return cls(sample_rate=sample_rate, frame_len=frame_len, hop=hop, fft_size=fft_size)

    @property
    def n_bins(self) -> int:
        """Number of rfft bins, ``fft_size // 2 + 1``."""
        return self.fft_size // 2 + 1

    @property
    def bin_hz(self) -> float:
        """Width of one FFT bin, Hz."""
        return self.sample_rate / self.fft_size


def hann_window(length: int) -> Float32Array:
    """Periodic Hann window of ``length`` samples, float32, shape (length,)."""
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


def frame_view(samples: Float32Array, frame_len: int, hop: int) -> Float32Array:
    """Overlapping frames of ``samples`` as a read-only strided view.

    Parameters
    ----------
    samples : ndarray, shape (n,), contiguous
    frame_len, hop : int
        Frame length and hop, samples.

    Returns
    -------
    ndarray, shape (n_frames, frame_len)
        ``n_frames = (n - frame_len) // hop + 1`` (0 when ``n < frame_len``).
    """
    n_frames = 0 if len(samples) < frame_len else (len(samples) - frame_len) // hop + 1
    step = samples.strides[0]
    view: Float32Array = np.ndarray(
        (n_frames, frame_len), dtype=samples.dtype, buffer=samples, strides=(hop * step, step)
    )
    view.flags.writeable = False
    return view


@functools.lru_cache(maxsize=64)  # shared and read-only, so unpickling a detector is cheap
def analysis_window(frame_len: int) -> Float32Array:
    """Hann window scaled by ``2 / sum(window)``, so a sine of amplitude A peaks near A in the spectrum."""
    window = hann_window(frame_len).astype(np.float64)
    scaled = (window * (2.0 / window.sum())).astype(np.float32)
    scaled.setflags(write=False)
    return scaled


def spectrum(windowed: Float32Array, fft_size: int) -> Complex64Array:
    """Complex spectrum of each windowed frame.

    Parameters
    ----------
    windowed : ndarray, shape (n_frames, frame_len), float32
        Frames times :func:`analysis_window`.
    fft_size : int
        FFT length (zero-padded), samples.

    Returns
    -------
    ndarray, shape (n_frames, fft_size // 2 + 1), complex64
    """
    return scipy.fft.rfft(windowed, n=fft_size, axis=1)


def level_norm(window: Float32Array) -> float:
    """``sum(window ** 2)``: the divisor of :func:`frame_power` for frames windowed by ``window``."""
    return float(np.sum(np.square(window, dtype=np.float64)))


def frame_power(windowed: Float32Array, norm: float, *, overwrite: bool = False) -> Float32Array:
    """Windowed mean-square level of each frame, linear (full-scale square 1, full-scale sine 0.5).

    ``10 * log10(power)`` is the level in dBFS.

    Parameters
    ----------
    windowed : ndarray, shape (n_frames, frame_len), float32
        Frames times a window.
    norm : float
        :func:`level_norm` of the window used.
    overwrite : bool
        Square ``windowed`` in place (saves a temporary array; the caller no longer needs it).

    Returns
    -------
    ndarray, shape (n_frames,), float32
    """
    squares = np.square(windowed, out=windowed) if overwrite else np.square(windowed)
    return np.add.reduce(squares, axis=1) * np.float32(1.0 / norm)
