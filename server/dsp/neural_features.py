"""Input features of the learned onset detector: log filtered magnitudes at two frame sizes and their rise.

Every frame ``i`` ends at stream sample ``(i + 1) * hop`` (causal, as on a
:class:`~server.dsp.spectrum.FrameGrid`) and is seen through a short (~23 ms) and a long (~46 ms) periodic
Hann window ending at the same sample.
Each magnitude spectrum goes through a triangular filterbank with a fixed number of bands whose centres
are fixed in Hz (so the network sees the same inputs at every sample rate; bands above 95 % of Nyquist are
always 0), then ``log10(1 + LOG_GAIN * band)``. The positive first difference of those log bands against the
previous frame follows them. Each step works frame by frame (pocketfft per row, sparse products per column,
element-wise maths), so a frame's features never depend on how many frames are computed together.

The training script (``train/features.py``) calls these same functions, so training and serving agree exactly.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt
import scipy.sparse

from server.dsp.spectrum import FrameGrid, analysis_window, frame_power, frame_view, level_norm, spectrum

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

HOP_S = 0.010  # the network's frame rate is fixed: 100 frames per second
SHORT_FRAME_S = 0.023  # short analysis window, seconds (1024-point FFT at 44.1 kHz)
LONG_FRAME_S = 0.046  # long analysis window, seconds (2048-point FFT at 44.1 kHz)
FMIN_HZ = 40.0  # lowest band centre
FMAX_HZ = 16000.0  # highest band centre (bands above 95 % of Nyquist stay 0)
SHORT_BANDS_PER_OCTAVE = 6
LONG_BANDS_PER_OCTAVE = 12
FILE_CHUNK_FRAMES = 256  # file_features computes this many frames at a time
LOG_GAIN = 1000.0  # log10(1 + LOG_GAIN * magnitude): a full-scale sine in one band gives about 3


@dataclasses.dataclass(frozen=True, eq=False)
class Bank:
    """A fixed-size triangular filterbank over the bins ``[first_bin, stop_bin)`` of one spectrum.

    Attributes
    ----------
    first_bin, stop_bin : int
    weights : scipy.sparse.csr_matrix of float32, shape (n_bands, stop_bin - first_bin)
        Each row sums to 1 (a weighted mean), or is empty for a band above 95 % of Nyquist.
    """

    first_bin: int
    stop_bin: int
    weights: scipy.sparse.csr_matrix

    @property
    def n_bands(self) -> int:
        return int(self.weights.shape[0])


def n_bands(bands_per_octave: int) -> int:
    """Bands of a :func:`fixed_bank` with centres from ``FMIN_HZ`` to ``FMAX_HZ``."""
    return int(np.floor(np.log2(FMAX_HZ / FMIN_HZ) * bands_per_octave + 1e-9)) + 1


@functools.lru_cache(maxsize=64)
def fixed_bank(sample_rate: int, fft_size: int, bands_per_octave: int) -> Bank:
    """Triangles centred at ``FMIN_HZ * 2 ** (k / bands_per_octave)``, reaching the neighbouring centres.

    A triangle narrower than one bin on a side is widened to one bin, so every band below the cut-off
    reads at least one bin whatever the FFT size.

    Parameters
    ----------
    sample_rate : int
        Samples per second.
    fft_size : int
        FFT length, samples.
    bands_per_octave : int

    Returns
    -------
    Bank
        ``n_bands(bands_per_octave)`` bands at every sample rate.
    """
    count = n_bands(bands_per_octave)
    centres = FMIN_HZ * 2.0 ** (np.arange(-1, count + 1) / bands_per_octave)
    bin_hz = sample_rate / fft_size
    freqs = np.arange(fft_size // 2 + 1) * bin_hz
    top_hz = 0.95 * sample_rate / 2.0
    dense = np.zeros((count, len(freqs)))
    for k in range(count):
        low, centre, high = centres[k], centres[k + 1], centres[k + 2]
        if centre > top_hz:
            continue
        left = max(centre - low, bin_hz)
        right = max(high - centre, bin_hz)
        rising = np.clip(1.0 - (centre - freqs) / left, 0.0, None)
        falling = np.clip(1.0 - (freqs - centre) / right, 0.0, None)
        row = np.where(freqs < centre, rising, falling)
        dense[k] = row / row.sum()
    used = np.flatnonzero(dense.any(axis=0))
    first_bin, stop_bin = int(used[0]), int(used[-1]) + 1
    weights = scipy.sparse.csr_matrix(dense[:, first_bin:stop_bin].astype(np.float32))
    weights.sort_indices()
    for array in (weights.data, weights.indices, weights.indptr):
        array.setflags(write=False)
    return Bank(first_bin=first_bin, stop_bin=stop_bin, weights=weights)


@dataclasses.dataclass(frozen=True, eq=False)
class FeaturePlan:
    """Everything the features of one sample rate need, built once and shared.

    Attributes
    ----------
    sample_rate : int
    hop : int
        Samples between frames (``HOP_S`` rounded).
    short, long : FrameGrid
        The two analysis grids (same hop, frames ending at the same sample).
    short_window, long_window : ndarray of float32
        :func:`~server.dsp.spectrum.analysis_window` of each frame length.
    short_bank, long_bank : Bank
    level_norm : float
        For the long frame's :func:`~server.dsp.spectrum.frame_power`.
    n_log : int
        Log bands per frame (short then long); the features are these and their rise, ``2 * n_log``.
    """

    sample_rate: int
    hop: int
    short: FrameGrid
    long: FrameGrid
    short_window: F32
    long_window: F32
    short_bank: Bank
    long_bank: Bank
    level_norm: float
    n_log: int

    @property
    def n_features(self) -> int:
        return 2 * self.n_log

    @property
    def tail_len(self) -> int:
        """Samples a stream keeps between blocks: the long frame minus one hop."""
        return self.long.frame_len - self.hop


@functools.lru_cache(maxsize=64)
def feature_plan(sample_rate: int) -> FeaturePlan:
    """The shared :class:`FeaturePlan` of a sample rate."""
    short = FrameGrid.from_seconds(sample_rate, SHORT_FRAME_S, HOP_S)
    long = FrameGrid.from_seconds(sample_rate, LONG_FRAME_S, HOP_S)
    short_bank = fixed_bank(sample_rate, short.fft_size, SHORT_BANDS_PER_OCTAVE)
    long_bank = fixed_bank(sample_rate, long.fft_size, LONG_BANDS_PER_OCTAVE)
    long_window = analysis_window(long.frame_len)
    return FeaturePlan(
        sample_rate=sample_rate,
        hop=short.hop,
        short=short,
        long=long,
        short_window=analysis_window(short.frame_len),
        long_window=long_window,
        short_bank=short_bank,
        long_bank=long_bank,
        level_norm=level_norm(long_window),
        n_log=short_bank.n_bands + long_bank.n_bands,
    )


def windowed_frames(
    samples: F32, ends: I64, grid: FrameGrid, window: F32, regular: tuple[int, int, int] | None
) -> F32:
    """Frames ending at ``ends`` times ``window``, zero-padded to the FFT size.

    Parameters
    ----------
    samples : ndarray, shape (n,), float32, contiguous
    ends : ndarray, shape (n_frames,), int64
        One past each frame's last sample.
    grid : FrameGrid
    window : ndarray, shape (frame_len,), float32
    regular : (members, count, stride) or None
        When ``ends`` is ``members`` runs of ``count`` frames one hop apart, each run ``stride`` samples
        after the previous one: the frames are then read through a strided view instead of gathered
        (the same values).

    Returns
    -------
    ndarray, shape (n_frames, fft_size), float32
    """
    padded = np.empty((len(ends), grid.fft_size), dtype=np.float32)
    padded[:, grid.frame_len :] = 0.0
    if regular is None:
        frames = frame_view(samples, grid.frame_len, 1)[ends - grid.frame_len]
        np.multiply(frames, window, out=padded[:, : grid.frame_len])
        return padded
    members, count, stride = regular
    step = samples.strides[0]
    view: F32 = np.ndarray(
        (members, count, grid.frame_len),
        dtype=np.float32,
        buffer=samples,
        offset=int(ends[0] - grid.frame_len) * step,
        strides=(stride * step, grid.hop * step, step),
    )
    np.multiply(view, window, out=padded.reshape(members, count, -1)[:, :, : grid.frame_len])
    return padded


def _log_bands(padded: F32, grid: FrameGrid, bank: Bank, out: F32) -> None:
    """Log band magnitudes of windowed frames (n, fft_size) into ``out`` (n_bands, n), a column per frame."""
    spectra = spectrum(padded, grid.fft_size)
    columns = np.empty((bank.stop_bin - bank.first_bin, len(padded)), dtype=np.float32)
    np.abs(spectra[:, bank.first_bin : bank.stop_bin].T, out=columns)
    bands: F32 = bank.weights @ columns
    np.multiply(bands, np.float32(LOG_GAIN), out=out)
    np.add(out, np.float32(1.0), out=out)
    np.log10(out, out=out)


def log_bands(
    plan: FeaturePlan, samples: F32, ends: I64, regular: tuple[int, int, int] | None = None
) -> tuple[F32, F32]:
    """Log band magnitudes and level of the frames ending at each of ``ends``.

    Parameters
    ----------
    plan : FeaturePlan
    samples : ndarray, shape (n,), float32, contiguous
        One or several streams' samples, joined.
    ends : ndarray, shape (n_frames,), int64
        Index one past each frame's last sample in ``samples``; needs ``ends >= long.frame_len``.
    regular : (members, count, stride), optional
        See :func:`windowed_frames`.

    Returns
    -------
    bands : ndarray, shape (n_log, n_frames), float32
        Short-window bands, then long-window bands, ``log10(1 + LOG_GAIN * magnitude)``.
    power : ndarray, shape (n_frames,), float32
        Long-window mean-square level, linear (see :func:`~server.dsp.spectrum.frame_power`).
    """
    out = np.empty((plan.n_log, len(ends)), dtype=np.float32)
    split = plan.short_bank.n_bands
    short = windowed_frames(samples, ends, plan.short, plan.short_window, regular)
    _log_bands(short, plan.short, plan.short_bank, out[:split])
    del short
    long = windowed_frames(samples, ends, plan.long, plan.long_window, regular)
    _log_bands(long, plan.long, plan.long_bank, out[split:])
    power = frame_power(long[:, : plan.long.frame_len], plan.level_norm, overwrite=True)
    return out, power


def with_rise(bands: F32, previous: F32) -> F32:
    """Features: the log bands stacked over their positive rise from the previous frame.

    Parameters
    ----------
    bands : ndarray, shape (n_log, n_frames), float32
    previous : ndarray, shape (n_log, n_frames), float32
        The log bands of each frame's previous frame.

    Returns
    -------
    ndarray, shape (2 * n_log, n_frames), float32
    """
    out = np.empty((2 * len(bands), bands.shape[1]), dtype=np.float32)
    out[: len(bands)] = bands
    rise = out[len(bands) :]
    np.subtract(bands, previous, out=rise)
    np.maximum(rise, np.float32(0.0), out=rise)
    return out


def file_features(plan: FeaturePlan, mono: F32) -> tuple[F32, F32]:
    """Features and levels of a whole signal from the start of a stream (silence before it).

    The frames are those a stream fed ``mono`` would have analysed: frame ``i`` ends at sample
    ``(i + 1) * hop``, for every complete frame.

    Returns
    -------
    features : ndarray, shape (n_features, n_frames), float32
    power : ndarray, shape (n_frames,), float32
    """
    samples = np.concatenate([np.zeros(plan.tail_len, dtype=np.float32), mono.astype(np.float32)])
    count = (len(samples) - plan.long.frame_len) // plan.hop + 1 if len(samples) >= plan.long.frame_len else 0
    bands = np.empty((plan.n_log, count), dtype=np.float32)
    power = np.empty(count, dtype=np.float32)
    for first in range(0, count, FILE_CHUNK_FRAMES):  # small arrays stay in cache; values are per frame
        stop = min(count, first + FILE_CHUNK_FRAMES)
        ends = plan.long.frame_len + plan.hop * np.arange(first, stop, dtype=np.int64)
        bands[:, first:stop], power[first:stop] = log_bands(plan, samples, ends, (1, stop - first, 0))
    previous = np.empty_like(bands)
    previous[:, :1] = 0.0  # the silent past: log10(1 + 0)
    previous[:, 1:] = bands[:, :-1]
    return with_rise(bands, previous), power
