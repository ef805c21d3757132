"""Logarithmically spaced triangular filterbank, applied as a sparse matrix product (no BLAS).

Band edges are in Hz so the bands mean the same at every sample rate. A dense matrix product would be
simpler, but BLAS picks different kernels for different numbers of frames and so changes the last bits of
the result with the block size. scipy's sparse product (its own C++ loops) computes each band of each frame
as a plain running sum over the band's bins in ascending order, the same whatever the number of frames,
and vectorised across frames, so a batch of many frames costs about a fifth of per-frame segment sums.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
import numpy.typing as npt
import scipy.sparse

FMIN_HZ = 30.0  # lowest band centre, as in SuperFlux
FMAX_HZ = 17000.0  # highest band centre (capped below Nyquist)
BANDS_PER_OCTAVE = 24  # SuperFlux's published resolution


@dataclasses.dataclass(frozen=True, eq=False)
class Filterbank:
    """Triangular filterbank whose neighbours meet at each other's centres.

    Between two consecutive centre bins every bin belongs to exactly two bands: the rising edge of the
    upper one and the falling edge of the lower one, with weights adding up to 1. So the bank is applied
    to one contiguous slice of the spectrum with two segment sums, without gathering bins.

    Attributes
    ----------
    first_bin, stop_bin : int
        The slice ``[first_bin, stop_bin)`` of the spectrum the bank reads.
    rise : ndarray of float32, shape (stop_bin - first_bin,)
        Weight of each bin in the band whose centre is at or above it.
    segments : ndarray of int64, shape (n_bands + 1,)
        Start of each run of bins between consecutive centres, relative to ``first_bin``.
    inverse_area : ndarray of float32, shape (n_bands,)
        One over each triangle's weight sum, so every band is a weighted mean.
    weights : scipy.sparse.csr_matrix of float32, shape (n_bands, stop_bin - first_bin)
        Each band's weight of each bin of the slice: its triangle times its ``inverse_area``.
    """

    first_bin: int
    stop_bin: int
    rise: npt.NDArray[np.float32]
    segments: npt.NDArray[np.int64]
    inverse_area: npt.NDArray[np.float32]
    weights: scipy.sparse.csr_matrix

    @property
    def n_bands(self) -> int:
        return len(self.inverse_area)


@functools.lru_cache(maxsize=64)  # shared, read-only: unpickling a detector must not rebuild it (~1 ms)
def log_filterbank(
    sample_rate: int,
    fft_size: int,
    *,
    fmin_hz: float = FMIN_HZ,
    fmax_hz: float = FMAX_HZ,
    bands_per_octave: int = BANDS_PER_OCTAVE,
) -> Filterbank:
    """Triangular filters centred on a logarithmic frequency grid, one band per distinct centre bin.

    Parameters
    ----------
    sample_rate : int
        Samples per second.
    fft_size : int
        FFT length, samples; the spectrum has ``fft_size // 2 + 1`` bins.
    fmin_hz, fmax_hz : float
        Lowest and highest centre frequency, Hz; ``fmax_hz`` is capped at 95 % of Nyquist.
    bands_per_octave : int
        Centre frequencies per octave before merging centres that fall on the same bin.

    Returns
    -------
    Filterbank
        Area-normalised triangles (a flat spectrum gives the same value in every band).
    """
    bin_hz = sample_rate / fft_size
    top_hz = min(fmax_hz, 0.95 * sample_rate / 2.0)
    n_centres = int(np.floor(np.log2(top_hz / fmin_hz) * bands_per_octave)) + 1
    centres_hz = fmin_hz * 2.0 ** (np.arange(-1, n_centres + 1) / bands_per_octave)
    centres = np.unique(np.round(centres_hz / bin_hz).astype(np.int64))
    centres = centres[centres <= fft_size // 2]
    # Segment j holds bins (centres[j], centres[j + 1]]: rising into band j + 1, falling out of band j.
    first_bin, stop_bin = int(centres[0]) + 1, int(centres[-1]) + 1
    rise = np.empty(stop_bin - first_bin)
    for low, high in itertools.pairwise(centres):
        rise[low + 1 - first_bin : high + 1 - first_bin] = (np.arange(low + 1, high + 1) - low) / (high - low)
    segments = (centres[:-1] + 1 - first_bin).astype(np.int64)
    rise_sums = np.add.reduceat(rise, segments)
    fall_sums = np.add.reduceat(1.0 - rise, segments)
    area = rise_sums[:-1] + fall_sums[1:]
    inverse_area = (1.0 / area).astype(np.float32)
    # Band j rises over segment j and falls over segment j + 1.
    bounds = [*segments.tolist(), stop_bin - first_bin]
    dense = np.zeros((len(area), stop_bin - first_bin), dtype=np.float64)
    for j in range(len(area)):
        dense[j, bounds[j] : bounds[j + 1]] = rise[bounds[j] : bounds[j + 1]]
        dense[j, bounds[j + 1] : bounds[j + 2]] = 1.0 - rise[bounds[j + 1] : bounds[j + 2]]
    weights = scipy.sparse.csr_matrix((dense / area[:, None]).astype(np.float32))
    weights.sort_indices()
    bank = Filterbank(
        first_bin=first_bin,
        stop_bin=stop_bin,
        rise=rise.astype(np.float32),
        segments=segments,
        inverse_area=inverse_area,
        weights=weights,
    )
    for array in (bank.rise, bank.segments, bank.inverse_area, weights.data, weights.indices, weights.indptr):
        array.setflags(write=False)
    return bank


def apply_filterbank(magnitude: npt.NDArray[np.float32], bank: Filterbank) -> npt.NDArray[np.float32]:
    """Band values of each frame's magnitude spectrum.

    Parameters
    ----------
    magnitude : ndarray, shape (n_frames, n_bins) or (n_frames, bank.stop_bin - bank.first_bin), float32
        The whole spectrum, or already only the bank's slice of it.
    bank : Filterbank

    Returns
    -------
    ndarray, shape (n_frames, n_bands), float32, C-contiguous
        Weighted mean magnitude per band; each row depends only on the same row of ``magnitude``.
    """
    if magnitude.shape[1] != bank.stop_bin - bank.first_bin:
        magnitude = magnitude[:, bank.first_bin : bank.stop_bin]
    return bands_of_columns(np.ascontiguousarray(magnitude.T), bank)


def bands_of_columns(columns: npt.NDArray[np.float32], bank: Filterbank) -> npt.NDArray[np.float32]:
    """:func:`apply_filterbank` of magnitudes given one column per frame.

    Parameters
    ----------
    columns : ndarray, shape (stop_bin - first_bin, n_frames), float32, C-contiguous
        The bank's slice of each frame's magnitude spectrum, one frame per column.

    Returns
    -------
    ndarray, shape (n_frames, n_bands), float32, C-contiguous
    """
    product: npt.NDArray[np.float32] = bank.weights @ columns
    return np.ascontiguousarray(product.T)
