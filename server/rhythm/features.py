"""The rhythm front end: log-compressed band rises, grouped into low, mid and high.

The detector's ``superflux`` features are filterbank magnitudes, 24 bands per octave, one row per 10 ms hop
(:func:`server.dsp.odf.features`). From those rows this module computes, per frame, the rise of each band
(log-compressed, half-wave rectified, against the frame before) and its mean over three groups of bands:
low (kick-like), mid (snare-like) and high (hat-like). The beat tracker's onset strength is the mean of the
three group rises, so a kick (a handful of bands below 150 Hz) counts as much as a hi-hat (dozens of bands
above 5 kHz), unlike a flux summed over all bands, where the many high bands dominate and eighth-note hats
pull a tracker to double time. The same group rises say where an onset's attack is strongest
(:mod:`server.rhythm.bands`).

:class:`BandFlux` computes the filterbank rows itself with the detector's own functions, for use apart from a
detector (benches, tests, whole files); beside a live detector the rows it already computed are enough
(:func:`rise_features`), which is what the tracker's cost budget counts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.filterbank import Filterbank, log_filterbank
from server.dsp.odf import features
from server.dsp.spectrum import FrameGrid, analysis_window, frame_view, spectrum

F32 = npt.NDArray[np.float32]

FRAME_S = 0.04  # window, seconds: the detector's default grid
HOP_S = 0.01  # hop, seconds
COMPRESSION = 1000.0  # log10(1 + COMPRESSION * magnitude); magnitude 1 is a full-scale sine
LOW_MAX_HZ = 150.0  # band centres up to this are "low" (kick-like)
HIGH_MIN_HZ = 5000.0  # band centres from this up are "high" (hat-like); between the two "mid"
BAND_NAMES = ("low", "mid", "high")


@dataclasses.dataclass(frozen=True, eq=False)
class BandGroups:
    """Which group each filterbank band belongs to.

    Attributes
    ----------
    masks : ndarray of float32, shape (n_bands, 3)
        Column ``g`` is 1 / (bands in group g) on the bands of group ``g``, else 0: a product with band
        rises gives each group's mean rise.
    """

    masks: F32


@functools.lru_cache(maxsize=32)
def band_groups(bank: Filterbank, bin_hz: float, low_max_hz: float, high_min_hz: float) -> BandGroups:
    """The low, mid and high groups of a filterbank's bands, by each band's centre frequency."""
    centres_hz = (np.asarray(bank.weights.argmax(axis=1)).ravel() + bank.first_bin) * bin_hz
    group = np.where(centres_hz <= low_max_hz, 0, np.where(centres_hz >= high_min_hz, 2, 1))
    masks = np.zeros((len(group), 3), dtype=np.float32)
    masks[np.arange(len(group)), group] = 1.0
    masks /= np.maximum(masks.sum(axis=0, keepdims=True), 1.0)
    masks.setflags(write=False)
    return BandGroups(masks)


def rise_features(bands: F32, previous: F32, groups: BandGroups) -> tuple[F32, F32]:
    """Per-frame onset strength and group rises from filterbank magnitudes.

    Parameters
    ----------
    bands : ndarray, shape (n_frames, n_bands), float32
        Filterbank magnitudes of consecutive frames (the detector's ``superflux`` feature rows).
    previous : ndarray, shape (1, n_bands), float32
        The magnitudes of the frame before the first.
    groups : BandGroups

    Returns
    -------
    strength : ndarray, shape (n_frames,), float32
        Mean of the three group rises, log10 units.
    rises : ndarray, shape (n_frames, 3), float32
        Mean rise of the low, mid and high bands, log10 units.
    """
    logs = np.log10(np.float32(1.0) + np.float32(COMPRESSION) * np.concatenate((previous, bands)))
    rise = np.maximum(logs[1:] - logs[:-1], np.float32(0.0))
    # Per row, a product by a small constant matrix, written as three row sums so no BLAS kernel (whose
    # choice depends on the number of rows) changes the last bits with the block size.
    rises = np.empty((rise.shape[0], 3), dtype=np.float32)
    for g in range(3):
        rises[:, g] = np.add.reduce(rise * groups.masks[:, g], axis=1)
    return np.add.reduce(rises, axis=1) * np.float32(1.0 / 3.0), rises


@functools.lru_cache(maxsize=16)
def grid_for(sample_rate: int) -> tuple[FrameGrid, Filterbank, BandGroups]:
    """The detector's default grid and filterbank at ``sample_rate``, and the filterbank's groups."""
    grid = FrameGrid.from_seconds(sample_rate, FRAME_S, HOP_S)
    bank = log_filterbank(sample_rate, grid.fft_size)
    return grid, bank, band_groups(bank, grid.bin_hz, LOW_MAX_HZ, HIGH_MIN_HZ)


class BandFlux:
    """Streaming front end for one mono stream, apart from a detector: strength and group rises per hop.

    Frame ``i`` covers stream samples ``[(i + 1) * hop - frame_len, (i + 1) * hop)`` (zeros before the
    stream), as the detector's; see :attr:`frame_time_offset_s` for where its attack lies.
    """

    def __init__(self, sample_rate: int) -> None:
        self._rate = int(sample_rate)
        self._grid, self._bank, self._groups = grid_for(self._rate)
        self.reset()

    @property
    def hop_s(self) -> float:
        return self._grid.hop / self._rate

    @property
    def frame_time_offset_s(self) -> float:
        """Stream time of the attack that peaks in frame 0, seconds: ``(hop - frame_len / 2) / rate``."""
        return (self._grid.hop - self._grid.frame_len / 2) / self._rate

    def reset(self) -> None:
        grid = self._grid
        self._tail = np.zeros(grid.frame_len - grid.hop, dtype=np.float32)
        self._previous = np.zeros((1, self._bank.n_bands), dtype=np.float32)

    def process(self, samples: npt.ArrayLike) -> tuple[F32, F32]:
        """Feed mono samples; return the new frames' :func:`rise_features`."""
        grid = self._grid
        buffer = np.concatenate((self._tail, np.asarray(samples, dtype=np.float32).reshape(-1)))
        frames = frame_view(buffer, grid.frame_len, grid.hop)
        n = frames.shape[0]
        self._tail = buffer[n * grid.hop :].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros((0, 3), dtype=np.float32)
        spectra = spectrum(frames * analysis_window(grid.frame_len), grid.fft_size)
        bands = features("superflux", spectra, self._bank, grid.bin_hz)
        out = rise_features(bands, self._previous, self._groups)
        self._previous = bands[-1:].copy()
        return out

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._rate, self._tail.tobytes(), self._previous.tobytes())

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        rate, tail, previous = state
        self.__init__(rate)  # type: ignore[misc]
        self._tail = np.frombuffer(tail, dtype=np.float32).copy()
        self._previous = np.frombuffer(previous, dtype=np.float32).reshape(1, -1).copy()
