"""Logarithmically spaced triangular filterbank, applied by sparse segment sums (no BLAS).

Band edges are in Hz so the bands mean the same at every sample rate. A dense matrix product would be
simpler, but BLAS picks different kernels for different numbers of frames and so changes the last bits of
the result with the block size; gathering each band's bins and summing per row does not.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

FMIN_HZ = 30.0  # lowest band centre, as in SuperFlux
FMAX_HZ = 17000.0  # highest band centre (capped below Nyquist)
BANDS_PER_OCTAVE = 24  # SuperFlux's published resolution


@dataclasses.dataclass(frozen=True, eq=False)
class Filterbank:
    """Sparse triangular filterbank.

    Attributes
    ----------
    bins : ndarray of int64, shape (n_weights,)
        FFT bin of each weight; bands are stored one after another.
    weights : ndarray of float32, shape (n_weights,)
        Triangle weight of each entry, normalised so each band's weights sum to 1.
    starts : ndarray of int64, shape (n_bands,)
        Offset of each band's first entry in ``bins``/``weights``.
    """

    bins: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]
    starts: npt.NDArray[np.int64]

    @property
    def n_bands(self) -> int:
        return len(self.starts)


@functools.lru_cache(maxsize=64)  # shared, read-only: unpickling a detector must not rebuild it (~1 ms)
def log_filterbank(
    sample_rate: int,
    fft_size: int,
    *,
    fmin_hz: float = FMIN_HZ,
    fmax_hz: float = FMAX_HZ,
    bands_per_octave: int = BANDS_PER_OCTAVE,
) -> Filterbank:
    """Triangular filters centred on a logarithmic frequency grid, one band per distinct bin range.

    Parameters
    ----------
    sample_rate : int
        Samples per second.
    fft_size : int
        FFT length, samples; the spectrum has ``fft_size // 2 + 1`` bins.
    fmin_hz, fmax_hz : float
        Lowest and highest centre frequency, Hz; ``fmax_hz`` is capped at 95 % of Nyquist.
    bands_per_octave : int
        Centre frequencies per octave before merging bands that fall on the same bins.

    Returns
    -------
    Filterbank
        Area-normalised triangles (a flat spectrum gives the same value in every band).
    """
    bin_hz = sample_rate / fft_size
    top_hz = min(fmax_hz, 0.95 * sample_rate / 2.0)
    n_centres = int(np.floor(np.log2(top_hz / fmin_hz) * bands_per_octave)) + 1
    centres_hz = fmin_hz * 2.0 ** (np.arange(-1, n_centres + 1) / bands_per_octave)
    centre_bins = np.unique(np.round(centres_hz / bin_hz).astype(np.int64))
    bins: list[npt.NDArray[np.int64]] = []
    weights: list[npt.NDArray[np.float64]] = []
    for low, mid, high in zip(centre_bins[:-2], centre_bins[1:-1], centre_bins[2:], strict=True):
        rise = (np.arange(low + 1, mid + 1) - low) / (mid - low)
        fall = (high - np.arange(mid + 1, high)) / (high - mid)
        tri = np.concatenate([rise, fall])
        bins.append(np.arange(low + 1, high, dtype=np.int64))
        weights.append(tri / tri.sum())
    starts = np.cumsum([0] + [len(b) for b in bins[:-1]]).astype(np.int64)
    bank = Filterbank(
        bins=np.concatenate(bins),
        weights=np.concatenate(weights).astype(np.float32),
        starts=starts,
    )
    for array in (bank.bins, bank.weights, bank.starts):
        array.setflags(write=False)
    return bank


def apply_filterbank(magnitude: npt.NDArray[np.float32], bank: Filterbank) -> npt.NDArray[np.float32]:
    """Band values of each frame's magnitude spectrum.

    Parameters
    ----------
    magnitude : ndarray, shape (n_frames, n_bins), float32
    bank : Filterbank

    Returns
    -------
    ndarray, shape (n_frames, n_bands), float32
        Weighted mean magnitude per band; each row depends only on the same row of ``magnitude``.
    """
    if magnitude.shape[0] == 0:
        return np.zeros((0, bank.n_bands), dtype=np.float32)
    products = magnitude[:, bank.bins] * bank.weights
    return np.add.reduceat(products, bank.starts, axis=1)
