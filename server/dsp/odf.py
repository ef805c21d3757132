"""Onset detection functions (ODFs), one pure function pair per method.

Each method splits into a per-frame *feature* (computed from that frame's spectrum alone) and an ODF that
compares each frame's feature with the features of the ``lag`` frames before it. The streaming detector
keeps the last ``history`` feature rows and prepends them, so the ODF of a frame never depends on where a
block boundary fell. Every ODF is half-wave rectified (only rises count) and works on values log-compressed
relative to the current frame's loudest component, so it does not scale with the input level; it is divided
by a per-method unit so one ``threshold`` fits all.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.filterbank import Filterbank, bands_of_columns

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

RANGE_DB = 60.0  # the log compression keeps this much below the recent loudest component, dB (amplitude)
ABS_FLOOR = 1e-6  # absolute floor of the compression, linear amplitude (-120 dBFS)
FLOOR_WINDOW_S = 2.0  # "recent": the loudest frame peak over this long a past sets the floor


def frame_peaks(method: str, current: Any) -> F32:
    """Loudest component of each frame's features, in the features' own unit.

    Parameters
    ----------
    method : str
    current : ndarray, shape (n_frames, n_features)
        Rows from :func:`features`.

    Returns
    -------
    ndarray, shape (n_frames,), float32
    """
    if method == "complex":
        return np.maximum.reduce(np.abs(current), axis=1)
    return np.maximum.reduce(current, axis=1)


def compression_floor(method: str, recent_peak: F32) -> F32:
    """Floor of the log compression of each frame: ``RANGE_DB`` below its recent loudest peak.

    Compressing a frame and its reference with one floor that follows the recent level makes the ODF
    independent of the input gain while changes far below the loudest sound do not count.

    Parameters
    ----------
    method : str
        Powers (``hfc``, ``energy``) use twice the range in dB.
    recent_peak : ndarray, shape (n_frames,)
        Maximum of :func:`frame_peaks` over ``FLOOR_WINDOW_S`` up to each frame.

    Returns
    -------
    ndarray, shape (n_frames, 1), float32
    """
    scale, low = floor_constants(method)
    return np.maximum(recent_peak * scale, low)[:, None]


def floor_constants(method: str) -> tuple[np.float32, np.float32]:
    """``(scale, low)`` of :func:`compression_floor`: the floor is ``max(recent_peak * scale, low)``."""
    power = method in ("hfc", "energy")
    scale = np.float32(10.0 ** (-RANGE_DB / (10.0 if power else 20.0)))
    low = np.float32(ABS_FLOOR**2 if power else ABS_FLOOR)
    return scale, low


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
        :func:`frame_peaks` of the new frames.
    width : int
        Frames of the past that count (``FLOOR_WINDOW_S`` in frames).
    scale, low : float
        From :func:`floor_constants`.

    Returns
    -------
    list of float
        One floor per new frame.
    """
    floors = []
    for peak in peaks:
        while window and window[-1][1] <= peak:
            window.pop()
        window.append((frame, peak))
        if window[0][0] < frame - width:
            window.popleft()
        floor = window[0][1] * scale
        floors.append(floor if floor > low else low)
        frame += 1
    return floors


def log_rise(current: F32, reference: F32, floor: F32) -> F32:
    """Half-wave rectified ``log10(1 + current/floor) - log10(1 + reference/floor)``, same shape."""
    ratio = floor + current
    np.divide(ratio, floor + reference, out=ratio)
    np.log10(ratio, out=ratio)
    return np.maximum(ratio, np.float32(0.0), out=ratio)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How one method turns spectra into its ODF.

    Attributes
    ----------
    history : int
        Feature rows of the past the ODF needs, frames.
    unit : float
        Typical size of a clear onset's ODF step; the ODF is divided by it.
    mean_factor : float
        The adaptive threshold is ``mean_factor * moving mean + threshold``; above 1 for detection
        functions that stay high on stationary noise (Bello et al., 2005).
    attack_offset : float
        How far an attack lies before the end of the frame where the ODF peaks, in frame lengths
        (calibrated at the default frame and hop, halfway between clicks and drum hits).
    """

    history: int
    unit: float
    attack_offset: float
    mean_factor: float = 1.0


def superflux_lag(frame_len: int, hop: int) -> int:
    """Frame lag of SuperFlux's difference: where the Hann windows overlap by half, at least 1 frame."""
    return max(1, round(frame_len / 4 / hop))


def spec_for(method: str, frame_len: int, hop: int) -> MethodSpec:
    """The :class:`MethodSpec` of ``method`` on a grid of ``frame_len`` and ``hop`` samples."""
    if method == "superflux":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.03, attack_offset=0.24)
    if method == "complex":
        return MethodSpec(history=2, unit=0.02, attack_offset=0.32, mean_factor=1.5)
    if method == "hfc":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.3, attack_offset=0.2125)
    if method == "energy":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.3, attack_offset=0.225)
    raise ValueError(f"unknown method {method!r}")


def features(
    method: str, spectrum: C64, bank: Filterbank, bin_hz: float, hfc_weights: F32 | None = None
) -> Any:
    """Per-frame feature rows of ``method`` (linear, not yet compressed).

    Parameters
    ----------
    method : str
        One of ``superflux``, ``complex``, ``hfc``, ``energy``.
    spectrum : ndarray, shape (n_frames, n_bins), complex64
        Spectra of windowed frames, from :func:`server.dsp.spectrum.spectrum`.
    bank : Filterbank
        Log filterbank (used by ``superflux``).
    bin_hz : float
        Width of one bin, Hz (used by ``hfc``).
    hfc_weights : ndarray, shape (n_bins,), float32, optional
        ``hfc``'s bin weights, ``arange(n_bins) * bin_hz / 1000`` in float32, when already at hand.

    Returns
    -------
    ndarray, shape (n_frames, n_features)
        float32 band magnitudes (superflux), the complex64 spectrum itself (complex), or one float32
        column of frequency-weighted power (hfc, Hz/1000 per bin) or of power (energy).
    """
    if method == "complex":
        return spectrum
    if method == "superflux":
        # Magnitudes straight into one column per frame, the layout of the filterbank's sparse product.
        columns = np.empty((bank.stop_bin - bank.first_bin, spectrum.shape[0]), dtype=np.float32)
        np.abs(spectrum[:, bank.first_bin : bank.stop_bin].T, out=columns)
        return bands_of_columns(columns, bank)
    magnitude = np.abs(spectrum)
    power = np.square(magnitude)
    if method == "hfc":
        weights = hfc_weights
        if weights is None:
            weights = np.arange(spectrum.shape[1], dtype=np.float32) * np.float32(bin_hz / 1000.0)
        return np.sum(power * weights, axis=1, keepdims=True)
    if method == "energy":
        return np.sum(power, axis=1, keepdims=True)
    raise ValueError(f"unknown method {method!r}")


def odf(method: str, feats: Any, history: int, unit: float, floor: F32) -> F64:
    """ODF of every frame after the first ``history`` rows of ``feats``.

    Parameters
    ----------
    method : str
    feats : ndarray, shape (history + n_frames, n_features)
        Feature rows, oldest first, the first ``history`` being the stream's past.
    history : int
        Rows of past context at the start of ``feats`` (2 for ``complex``).
    unit : float
        Divisor that makes a clear onset about 1.
    floor : ndarray, shape (n_frames, 1), float32
        Compression floor of each frame, from :func:`compression_floor`.

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    if method == "complex":
        return odf_rows(method, feats[2:], (feats[1:-1], feats[:-2]), unit, floor)
    return odf_rows(method, feats[history:], (feats[: len(feats) - history],), unit, floor)


def odf_rows(method: str, current: Any, past: tuple[Any, ...], unit: float, floor: F32) -> F64:
    """ODF of each row of ``current`` against the same rows of ``past``; each row independent of the rest.

    Parameters
    ----------
    method : str
    current : ndarray, shape (n_frames, n_features)
        Feature rows of the frames to score.
    past : tuple of ndarray, each shape (n_frames, n_features)
        For ``complex`` the rows one and two frames back; otherwise the row ``history`` frames back.
    unit : float
    floor : ndarray, shape (n_frames, 1), float32

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    if method == "complex":
        return complex_domain(current, past[0], past[1], unit, floor)
    if method == "superflux":
        rise = log_rise(current, max_filter_bands(past[0]), floor)
        return np.divide(np.add.reduce(rise, axis=1), rise.shape[1] * unit, dtype=np.float64)
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


def complex_domain(current: C64, previous: C64, before: C64, unit: float, floor: F32) -> F64:
    """Rectified complex-domain deviation on log-compressed magnitudes (Duxbury; Dixon, DAFx 2006).

    Each bin is predicted from the two previous frames (same magnitude, phase advanced by the previous
    phase step); only bins whose magnitude rises count. Magnitudes are compressed as
    ``log10(1 + magnitude / floor)``.

    Parameters
    ----------
    current, previous, before : ndarray, shape (n_frames, n_bins), complex64
        Spectra of each frame, of the frame before it and of the one before that.
    unit : float
    floor : ndarray, shape (n_frames, 1), float32

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
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
