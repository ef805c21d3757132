"""Onset detection functions (ODFs) of the classical methods: pure functions, no method names.

Each classical method splits into a per-frame *feature* (computed from that frame's spectrum alone) and a
*comparison* of each frame's feature with the features of the frames ``lag`` frames before it. The
streaming detector keeps the last ``history`` feature rows and prepends them, so the ODF of a frame never
depends on where a block boundary fell. Every comparison is half-wave rectified (only rises count) and
works on values log-compressed relative to the recent loudest component, so it does not scale with the
input level; it is divided by a per-method unit so one ``threshold`` fits all. Which functions make up
which method is the table in :mod:`server.dsp.methods`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.filterbank import Filterbank, bands_of_columns
from server.dsp.spectrum import FrameGrid

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

# (current rows, past rows per lag, unit, floor) -> ODF per row
Compare = Callable[[Any, tuple[Any, ...], float, F32], F64]

RANGE_DB = 60.0  # the log compression keeps this much below the recent loudest component, dB (amplitude)
ABS_FLOOR = 1e-6  # absolute floor of the compression, linear amplitude (-120 dBFS)
FLOOR_WINDOW_S = 2.0  # "recent": the loudest frame peak over this long a past sets the floor


# --- Per-plan constants of the features -----------------------------------------------------------------


def no_constants(grid: FrameGrid) -> None:
    """Features that need nothing but the spectrum."""
    return None


def hfc_weights(grid: FrameGrid) -> F32:
    """Bin weights of ``hfc``: each bin's centre frequency, kHz, float32, shape (n_bins,), read-only."""
    weights = np.arange(grid.n_bins, dtype=np.float32) * np.float32(grid.bin_hz / 1000.0)
    weights.setflags(write=False)
    return weights


# --- Features: spectra (n_frames, n_bins) complex64 -> rows (n_frames, n_features) ----------------------


def spectrum_itself(spectrum: C64, constants: None) -> C64:
    """The complex spectrum as the feature (``complex``)."""
    return spectrum


def band_magnitudes(spectrum: C64, bank: Filterbank) -> F32:
    """Log-filterbank band magnitudes, float32, shape (n_frames, n_bands) (``superflux``)."""
    # Magnitudes straight into one column per frame, the layout of the filterbank's sparse product.
    columns = np.empty((bank.stop_bin - bank.first_bin, spectrum.shape[0]), dtype=np.float32)
    np.abs(spectrum[:, bank.first_bin : bank.stop_bin].T, out=columns)
    return bands_of_columns(columns, bank)


def weighted_power(spectrum: C64, weights: F32) -> F32:
    """One column of frequency-weighted power (bin weights in kHz), float32 (``hfc``)."""
    power = np.square(np.abs(spectrum))
    return np.sum(power * weights, axis=1, keepdims=True)


def total_power(spectrum: C64, constants: None) -> F32:
    """One column of power, float32 (``energy``)."""
    power = np.square(np.abs(spectrum))
    return np.sum(power, axis=1, keepdims=True)


# --- Frame peaks and the compression floor ---------------------------------------------------------------


def row_max(current: Any) -> F32:
    """Loudest component of each feature row, shape (n_frames,), float32 (real features)."""
    return np.maximum.reduce(current, axis=1)


def row_abs_max(current: Any) -> F32:
    """Loudest magnitude of each feature row, shape (n_frames,), float32 (complex features)."""
    return np.maximum.reduce(np.abs(current), axis=1)


def amplitude_floor() -> tuple[np.float32, np.float32]:
    """``(scale, low)`` of the compression floor of amplitudes: ``RANGE_DB`` below, ``ABS_FLOOR`` at least."""
    return np.float32(10.0 ** (-RANGE_DB / 20.0)), np.float32(ABS_FLOOR)


def power_floor() -> tuple[np.float32, np.float32]:
    """``(scale, low)`` of the compression floor of powers (twice the range in dB, the square floor)."""
    return np.float32(10.0 ** (-RANGE_DB / 10.0)), np.float32(ABS_FLOOR**2)


def compression_floor(floor: tuple[np.float32, np.float32], recent_peak: F32) -> F32:
    """Floor of the log compression of each frame: ``max(recent_peak * scale, low)``.

    Compressing a frame and its reference with one floor that follows the recent level makes the ODF
    independent of the input gain while changes far below the loudest sound do not count.

    Parameters
    ----------
    floor : (scale, low)
        The method's :func:`amplitude_floor` or :func:`power_floor`.
    recent_peak : ndarray, shape (n_frames,)
        Maximum of the frame peaks over ``FLOOR_WINDOW_S`` up to each frame.

    Returns
    -------
    ndarray, shape (n_frames, 1), float32
    """
    scale, low = floor
    return np.maximum(recent_peak * scale, low)[:, None]


def recent_peaks(window: collections.deque[tuple[int, float]], frame: int, peaks: list[float],
                 width: int) -> list[float]:
    """The recent peak of each new frame, streaming: the loudest of its peak and the ``width`` peaks before
    it (``window``, updated in place: see :func:`compression_floors`). A maximum is exact, so the values
    never depend on the block sizes."""
    return recent_peaks_many([(window, frame, len(peaks))], peaks, width)


def recent_peaks_many(streams: Iterable[tuple[collections.deque[tuple[int, float]], int, int]],
                      peaks: list[float], width: int) -> list[float]:
    """:func:`recent_peaks` of several streams' new frames in one call, joined.

    Parameters
    ----------
    streams : iterable of (window, frame, count)
        Each stream's window (updated in place), the index of its first new frame and its number of new
        frames.
    peaks : list of float
        The streams' new frame peaks, stream after stream.
    width : int
    """
    out: list[float] = []
    append = out.append
    row = 0
    for window, frame, count in streams:
        for peak in peaks[row : row + count]:
            while window and window[-1][1] <= peak:
                window.pop()
            window.append((frame, peak))
            if window[0][0] < frame - width:
                window.popleft()
            append(window[0][1])
            frame += 1
        row += count
    return out


def compression_floors(
    window: collections.deque[tuple[int, float]],
    frame: int,
    peaks: list[float],
    width: int,
    scale: float,
    low: float,
) -> list[float]:
    """Compression floor of new frames, streaming: :func:`compression_floor` of each frame's recent peak.

    The recent peak of a frame is the maximum of its peak and the peaks of the ``width`` frames before it,
    kept in ``window``; all in floats. A maximum is exact whatever the order of comparisons, the product
    of two float32 values is exact in a float, and rounding is monotonic, so these floors rounded to
    float32 are bitwise the float32 computation.

    Parameters
    ----------
    window : deque of (frame, peak)
        The state, updated in place: pairs with decreasing peaks, oldest first. Empty at the start of a
        stream, where it acts as zeros (peaks are never negative).
    frame : int
        Index of the first new frame (one more than the last frame pushed).
    peaks : list of float
        Frame peaks of the new frames.
    width : int
        Frames of the past that count (``FLOOR_WINDOW_S`` in frames).
    scale, low : float
        The method's floor constants.

    Returns
    -------
    list of float
        One floor per new frame.
    """
    return floors_of(recent_peaks(window, frame, peaks, width), scale, low)


def floors_of(recent: Iterable[float], scale: float, low: float) -> list[float]:
    """:func:`compression_floor` of each recent peak (:func:`recent_peaks`, :func:`recent_peaks_many`), in
    floats: ``max(peak * scale, low)``."""
    return [floor if (floor := peak * scale) > low else low for peak in recent]


# --- Comparisons: (current, past rows per lag, unit, floor) -> ODF float64 -------------------------------


def odf(compare: Compare, lags: tuple[int, ...], feats: Any, history: int, unit: float, floor: F32) -> F64:
    """ODF of every frame after the first ``history`` rows of ``feats``.

    Parameters
    ----------
    compare : callable
        The method's comparison, e.g. :func:`superflux_rise`.
    lags : tuple of int
        Frames back of each reference row ``compare`` takes, each at most ``history``.
    feats : ndarray, shape (history + n_frames, n_features)
        Feature rows, oldest first, the first ``history`` being the stream's past.
    history : int
        Rows of past context at the start of ``feats``.
    unit : float
        Divisor that makes a clear onset about 1.
    floor : ndarray, shape (n_frames, 1), float32
        Compression floor of each frame, from :func:`compression_floor`.

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    end = len(feats)
    return compare(feats[history:], tuple(feats[history - lag : end - lag] for lag in lags), unit, floor)


def log_rise(current: F32, reference: F32, floor: F32) -> F32:
    """Half-wave rectified ``log10(1 + current/floor) - log10(1 + reference/floor)``, same shape."""
    ratio = floor + current
    np.divide(ratio, floor + reference, out=ratio)
    np.log10(ratio, out=ratio)
    return np.maximum(ratio, np.float32(0.0), out=ratio)


def superflux_rise(current: F32, past: tuple[F32, ...], unit: float, floor: F32) -> F64:
    """Mean log rise of each band over the 3-band maximum of the reference frame (Böck & Widmer, 2013)."""
    return mean_log_rise(current, max_filter_bands(past[0]), unit, floor)


def mean_log_rise(current: F32, reference: F32, unit: float, floor: F32) -> F64:
    """:func:`log_rise` of each frame's bands over its reference, averaged over the bands, in ``unit``."""
    rise = log_rise(current, reference, floor)
    return np.divide(np.add.reduce(rise, axis=1), rise.shape[1] * unit, dtype=np.float64)


def single_rise(current: F32, past: tuple[F32, ...], unit: float, floor: F32) -> F64:
    """Log rise of a one-column feature over its reference (``hfc``, ``energy``)."""
    return np.divide(log_rise(current, past[0], floor)[:, 0], unit, dtype=np.float64)


def max_filter_bands(bands: F32) -> F32:
    """Maximum over each band and its two neighbours (SuperFlux's 3-band filter across frequency).

    Parameters
    ----------
    bands : ndarray, shape (n_frames, n_bands)

    Returns
    -------
    ndarray, same shape
    """
    out = bands.copy()
    np.maximum(out[:, 1:], bands[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], bands[:, 1:], out=out[:, :-1])
    return out


def complex_domain(current: C64, past: tuple[C64, ...], unit: float, floor: F32) -> F64:
    """Rectified complex-domain deviation on log-compressed magnitudes (Duxbury; Dixon, DAFx 2006).

    Each bin is predicted from the two previous frames (same magnitude, phase advanced by the previous
    phase step); only bins whose magnitude rises count. Magnitudes are compressed as
    ``log10(1 + magnitude / floor)``.

    Parameters
    ----------
    current : ndarray, shape (n_frames, n_bins), complex64
        Spectra of the frames to score.
    past : (previous, before), each like ``current``
        Spectra of the frame before each and of the one before that (lags 1 and 2).
    unit : float
    floor : ndarray, shape (n_frames, 1), float32

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    previous, before = past
    one = np.float32(1.0)
    magnitude = np.abs(current)
    previous_magnitude = np.abs(previous)
    phasor = current / np.where(magnitude > 0, magnitude, one)
    previous_phasor = previous / np.where(previous_magnitude > 0, previous_magnitude, one)
    before_magnitude = np.abs(before)
    before_phasor = before / np.where(before_magnitude > 0, before_magnitude, one)
    now = np.log10(one + magnitude / floor)
    prev = np.log10(one + previous_magnitude / floor)
    predicted = prev * previous_phasor * previous_phasor * np.conj(before_phasor)
    deviation = np.abs(now * phasor - predicted)
    rising = now > prev
    total = np.sum(np.where(rising, deviation, np.float32(0.0)), axis=1).astype(np.float64)
    return total / (current.shape[1] * unit)


# --- Lags --------------------------------------------------------------------------------------------------


def half_overlap_lag(grid: FrameGrid) -> tuple[int, ...]:
    """SuperFlux's lag: where the Hann windows overlap by half, at least 1 frame."""
    return (max(1, round(grid.frame_len / 4 / grid.hop)),)


def half_frame_lag(grid: FrameGrid) -> tuple[int, ...]:
    """``superflux_half``'s lag: half a frame (20 ms at the default 40 ms frames and 10 ms hops), at least 1.

    :func:`half_overlap_lag` (where the Hann windows overlap at half height, SuperFlux's published rule)
    is a quarter frame, one 10 ms hop at the defaults: frames that share three quarters of their samples,
    whose difference is small for all but the sharpest attacks, so bowed, blown, sung and padded notes
    that take 30-300 ms to rise rise little in any one hop. Half a frame back doubles their rise, while the
    3-band maximum filter still keeps vibrato out (chosen on the corpus's ``tune`` split and generated
    sustained notes: ``bench/superflux_tune.py``; scored on ``valid`` and the real clips: bench/README.md,
    "The default on pitched material").
    """
    return (max(1, round(grid.frame_len / 2 / grid.hop)),)


def last_two(grid: FrameGrid) -> tuple[int, ...]:
    """The two previous frames (a phase prediction needs both)."""
    return (1, 2)
