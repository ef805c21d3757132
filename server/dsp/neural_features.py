"""Input features of the learned onset detector: log filtered magnitudes and their rise, 100 frames a second.

Frames are those of the stream's analysis grid (:func:`network_grid`: 40 ms periodic Hann windows every
10 ms, frame ``i`` ending at stream sample ``(i + 1) * hop``), so the spectra are the ones the detector
already computes. Each magnitude spectrum goes through a triangular filterbank with a fixed number of bands
whose centres are fixed in Hz (the network sees the same inputs at every sample rate; bands above 95 % of
Nyquist are always 0), then ``log10(1 + LOG_GAIN * band)``. The positive rise of those log bands over one
and two frames follows them. Each step works frame by frame (pocketfft per row, sparse products per column,
element-wise maths), so a frame's features never depend on how many frames are computed together.

The training script (``train/features.py``) calls :func:`file_features`, built from the same functions, so
training and serving agree exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse

from server.dsp.spectrum import FrameGrid, analysis_window, frame_power, frame_view, level_norm, spectrum

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
C64 = npt.NDArray[np.complex64]

HOP_S = 0.010  # the network's frame rate is fixed: 100 frames per second
FRAME_S = 0.040  # analysis window, seconds (the default grid: 2048-point FFT at 44.1 kHz)
FMIN_HZ = 40.0  # lowest band centre
FMAX_HZ = 16000.0  # highest band centre (bands above 95 % of Nyquist stay 0)
BANDS_PER_OCTAVE = 12
LOG_GAIN = 1000.0  # log10(1 + LOG_GAIN * magnitude): a full-scale sine in one band gives about 3
RISE_LAGS = (1, 2)  # the features add the positive rise of each band over these many frames back
FILE_CHUNK_FRAMES = 256  # file_features computes this many frames at a time
TARGET_DELAY_FRAMES = 1  # the network marks the frame ending 10-20 ms after an attack (training and serving)


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


def network_grid(sample_rate: int) -> FrameGrid:
    """The analysis grid the network was trained on: ``FRAME_S`` windows every ``HOP_S``."""
    return FrameGrid.from_seconds(sample_rate, FRAME_S, HOP_S)


def n_features() -> int:
    """Features per frame: the log bands and their rise over each of ``RISE_LAGS``."""
    return n_bands(BANDS_PER_OCTAVE) * (1 + len(RISE_LAGS))


def history() -> int:
    """Past log-band rows the features of a frame need."""
    return max(RISE_LAGS)


def log_band_rows(spectra: C64, bank: Bank) -> F32:
    """Log band magnitudes of each frame's spectrum, ``log10(1 + LOG_GAIN * band)``.

    Parameters
    ----------
    spectra : ndarray, shape (n_frames, n_bins), complex64
        rfft rows of frames times :func:`~server.dsp.spectrum.analysis_window`.
    bank : Bank

    Returns
    -------
    ndarray, shape (n_frames, n_bands), float32, C-contiguous
        Row ``i`` depends on spectrum row ``i`` alone, bitwise, whatever the number of rows.
    """
    columns = np.empty((bank.stop_bin - bank.first_bin, len(spectra)), dtype=np.float32)
    np.abs(spectra[:, bank.first_bin : bank.stop_bin].T, out=columns)
    bands: F32 = bank.weights @ columns
    np.multiply(bands, np.float32(LOG_GAIN), out=bands)
    np.add(bands, np.float32(1.0), out=bands)
    np.log10(bands, out=bands)
    return np.ascontiguousarray(bands.T)


def feature_columns(current: F32, lagged: Sequence[F32]) -> F32:
    """The network's input: log bands and their positive rise over ``RISE_LAGS`` frames, one column per frame.

    Parameters
    ----------
    current : ndarray, shape (n_frames, n_bands), float32
        Log band rows of the frames.
    lagged : sequence of ndarray, each shape (n_frames, n_bands), float32
        For each of ``RISE_LAGS``, the rows that many frames before each frame.

    Returns
    -------
    ndarray, shape (n_bands * (1 + len(RISE_LAGS)), n_frames), float32
    """
    count, width = current.shape
    rows = np.empty((count, width * (1 + len(lagged))), dtype=np.float32)  # row by row, then one transpose
    rows[:, :width] = current
    for index, before in enumerate(lagged):
        rise = rows[:, width * (index + 1) : width * (index + 2)]
        np.subtract(current, before, out=rise)
        np.maximum(rise, np.float32(0.0), out=rise)
    return np.ascontiguousarray(rows.T)


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


def file_rows(sample_rate: int, mono: F32) -> tuple[F32, F32]:
    """Log band rows and levels of a whole signal from the start of a stream (silence before it).

    The frames are those a stream fed ``mono`` analyses on :func:`network_grid`: frame ``i`` ends at sample
    ``(i + 1) * hop``, for every complete frame; the same windows, spectra and bands as the server's.

    Returns
    -------
    rows : ndarray, shape (n_frames, n_bands), float32
    power : ndarray, shape (n_frames,), float32
        Mean-square level of each windowed frame, linear (:func:`~server.dsp.spectrum.frame_power`).
    """
    grid = network_grid(sample_rate)
    bank = fixed_bank(sample_rate, grid.fft_size, BANDS_PER_OCTAVE)
    window = analysis_window(grid.frame_len)
    norm = level_norm(window)
    tail = grid.frame_len - grid.hop
    samples = np.concatenate([np.zeros(tail, dtype=np.float32), np.asarray(mono, dtype=np.float32)])
    count = (len(samples) - grid.frame_len) // grid.hop + 1 if len(samples) >= grid.frame_len else 0
    rows = np.empty((count, bank.n_bands), dtype=np.float32)
    power = np.empty(count, dtype=np.float32)
    for first in range(0, count, FILE_CHUNK_FRAMES):  # small arrays stay in cache; values are per frame
        stop = min(count, first + FILE_CHUNK_FRAMES)
        ends = grid.frame_len + grid.hop * np.arange(first, stop, dtype=np.int64)
        padded = windowed_frames(samples, ends, grid, window, (1, stop - first, 0))
        rows[first:stop] = log_band_rows(spectrum(padded, grid.fft_size), bank)
        power[first:stop] = frame_power(padded[:, : grid.frame_len], norm, overwrite=True)
    return rows, power


def file_features(sample_rate: int, mono: F32) -> tuple[F32, F32]:
    """Features and levels of a whole signal from the start of a stream (silence before it).

    Returns
    -------
    features : ndarray, shape (n_features, n_frames), float32
        :func:`feature_columns` of :func:`file_rows`, with silent rows (zeros) before the first frame.
    power : ndarray, shape (n_frames,), float32
    """
    rows, power = file_rows(sample_rate, mono)
    past = history()
    padded = np.concatenate([np.zeros((past, rows.shape[1]), dtype=np.float32), rows])
    lagged = [padded[past - lag : len(padded) - lag] for lag in RISE_LAGS]
    return feature_columns(rows, lagged), power
