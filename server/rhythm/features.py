"""The band front end: how much each of three band groups rose at each frame.

The detector's ``superflux`` features are filterbank magnitudes, 24 bands per octave, one row per 10 ms hop
(:func:`server.dsp.odf.features`). From those rows this module computes, per frame, the rise of each band's
magnitude against the frame before (half-wave rectified, linear: an attack's energy, not its ratio to a
silence before it) and, for each of three groups of bands, low (kick-like, centres up to 150 Hz), mid
(snare-like) and high (hat-like, from 6 kHz), the sum of its rises. :mod:`server.rhythm.bands` compares the
groups.

Beside a detector the rows are the ones it already computed (``OnsetDetector.tap_rows``):
:func:`rise_totals` turns the rows of many streams' new frames into the beat strength's band rise and
the groups' rises (which give an onset its band) in one pass. :class:`BandFlux` computes the
rows itself with the detector's own functions, for use apart from a detector (tests).

Chosen on rhythm-dev (see bench/README.md): linear rises beat log-compressed ones, which named lone
synthetic snares "low" (from a silence before them, any leak at the bottom is a large log rise); the sum
of each group's rises (one ``np.add.reduceat``) with these edges beat the mean of each group's three
largest rises with edges at 120 Hz and 3 kHz (mid vs snare 0.715 -> 0.836 on rhythm-dev).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.filterbank import Filterbank, log_filterbank
from server.dsp.odf import band_magnitudes
from server.dsp.spectrum import FrameGrid, analysis_window, frame_view, spectrum

F32 = npt.NDArray[np.float32]

FRAME_S = 0.04  # window, seconds: the detector's default grid
HOP_S = 0.01  # hop, seconds
RISE_WEIGHT = 3.0  # weight of the total linear band rise in the beat strength
LOW_MAX_HZ = 150.0  # band centres up to this are "low" (kick-like)
HIGH_MIN_HZ = 6000.0  # band centres from this up are "high" (hat-like); between the two "mid"
BAND_NAMES = ("low", "mid", "high")


@dataclasses.dataclass(frozen=True)
class BandGroups:
    """Where each group's bands lie: bands ``[0, mid_start)`` are low, ``[mid_start, high_start)`` mid, the
    rest high (bands ascend in frequency)."""

    mid_start: int
    high_start: int

    @functools.cached_property
    def starts(self) -> npt.NDArray[np.intp]:
        """``[0, mid_start, high_start]``, each group's first band (for ``np.add.reduceat``)."""
        out = np.array([0, self.mid_start, self.high_start], dtype=np.intp)
        out.setflags(write=False)
        return out


@functools.lru_cache(maxsize=32)
def band_groups(bank: Filterbank, bin_hz: float, low_max_hz: float, high_min_hz: float) -> BandGroups:
    """The low, mid and high groups of a filterbank's bands, by each band's centre frequency."""
    centres_hz = (np.asarray(bank.weights.argmax(axis=1)).ravel() + bank.first_bin) * bin_hz
    mid_start = int(np.searchsorted(centres_hz, low_max_hz, side="right"))
    high_start = int(np.searchsorted(centres_hz, high_min_hz, side="left"))
    return BandGroups(mid_start=mid_start, high_start=max(mid_start, high_start))


def group_sums(rise: F32, groups: BandGroups) -> F32:
    """Summed rise of each group, low, mid and high, along the last axis: shape (..., 3), float32.

    Parameters
    ----------
    rise : ndarray, shape (..., n_bands), float32
        Rectified band rises; each output row depends on its input row only.
    groups : BandGroups
        A group may be empty (below 12 kHz sampling no band reaches 6 kHz): its sum is 0.
    """
    edges = (0, groups.mid_start, groups.high_start, rise.shape[-1])
    if edges[0] < edges[1] < edges[2] < edges[3]:
        return np.add.reduceat(rise, groups.starts, axis=-1)
    out = np.zeros((*rise.shape[:-1], 3), dtype=np.float32)
    for k in range(3):
        if edges[k] < edges[k + 1]:
            np.add.reduce(rise[..., edges[k]:edges[k + 1]], axis=-1, out=out[..., k])
    return out


def rise_totals(stacked: F32, groups: BandGroups) -> tuple[F32, F32]:
    """Summed rectified rise of every band from each row to the next, and of each group's bands.

    Parameters
    ----------
    stacked : ndarray, shape (n, n_bands), float32
        Filterbank magnitudes; beside live detectors, each stream's previous row and then its new rows,
        stream after stream (the values between two streams' rows are not used). Each value depends only
        on its two rows, so it does not depend on which other rows share the pass.
    groups : BandGroups

    Returns
    -------
    total : ndarray, shape (n - 1,), float32
    sums : ndarray, shape (n - 1, 3), float32
        :func:`group_sums` of the same rises.
    """
    rise = np.subtract(stacked[1:], stacked[:-1])
    np.maximum(rise, 0.0, out=rise)
    return np.add.reduce(rise, axis=1), group_sums(rise, groups)


def beat_strength(odf: F32, rise: F32, rise_weight: float = RISE_WEIGHT) -> F32:
    """The beat tracker's input: the detector's onset strength plus the weighted total band rise.

    The detector's function is log-compressed, so a kick with a hat on it scores little above the hat
    alone and eighth-note hats pull a tracker to double time or onto the off-beat; the linear rises add
    what the attack's energy says.

    Parameters
    ----------
    odf : ndarray, shape (n,)
        ``OnsetDetector.take_odf()`` (default grid: 40 ms frames, 10 ms hop).
    rise : ndarray, shape (n,)
        The total rise of :func:`rise_totals` for the same frames.
    rise_weight : float
        Chosen on rhythm-dev and the generated kits.

    Returns
    -------
    ndarray, shape (n,), float32
    """
    return np.asarray(odf, dtype=np.float32) + np.float32(rise_weight) * rise


@functools.lru_cache(maxsize=16)
def grid_for(sample_rate: int) -> tuple[FrameGrid, Filterbank, BandGroups]:
    """The detector's default grid and filterbank at ``sample_rate``, and the filterbank's groups."""
    grid = FrameGrid.from_seconds(sample_rate, FRAME_S, HOP_S)
    bank = log_filterbank(sample_rate, grid.fft_size)
    return grid, bank, band_groups(bank, grid.bin_hz, LOW_MAX_HZ, HIGH_MIN_HZ)


class BandFlux:
    """Streaming front end for one mono stream, apart from a detector: group rises per hop.

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
        """Feed mono samples; return the new frames' total and group rises (:func:`rise_totals`)."""
        grid = self._grid
        buffer = np.concatenate((self._tail, np.asarray(samples, dtype=np.float32).reshape(-1)))
        frames = frame_view(buffer, grid.frame_len, grid.hop)
        n = frames.shape[0]
        self._tail = buffer[n * grid.hop :].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros((0, 3), dtype=np.float32)
        spectra = spectrum(frames * analysis_window(grid.frame_len), grid.fft_size)
        bands = band_magnitudes(spectra, self._bank)
        out = rise_totals(np.concatenate((self._previous, bands)), self._groups)
        self._previous = bands[-1:].copy()
        return out

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._rate, self._tail.tobytes(), self._previous.tobytes())

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        rate, tail, previous = state
        self.__init__(rate)  # type: ignore[misc]
        self._tail = np.frombuffer(tail, dtype=np.float32).copy()
        self._previous = np.frombuffer(previous, dtype=np.float32).reshape(1, -1).copy()
