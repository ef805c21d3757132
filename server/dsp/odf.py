"""Onset detection functions (ODFs), one pure function pair per method.

Each method splits into a per-frame *feature* (computed from that frame's spectrum alone) and an ODF that
compares each frame's feature with the features of the ``lag`` frames before it. The streaming detector
keeps the last ``history`` feature rows and prepends them, so the ODF of a frame never depends on where a
block boundary fell. Every ODF is half-wave rectified (only rises count), works on log-compressed values so
it does not scale with the input level, and is divided by a per-method unit so one ``threshold`` fits all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.filterbank import Filterbank, apply_filterbank

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

LOG_GAIN = 1.0e4  # log compression: log10(1 + LOG_GAIN * x); values far below 1/LOG_GAIN count as silence


def log_compress(values: F32, gain: float | None = None) -> F32:
    """``log10(1 + gain * values)`` (gain ``LOG_GAIN`` by default), float32, same shape."""
    gain = LOG_GAIN if gain is None else gain
    return np.log10(np.float32(1.0) + np.float32(gain) * values)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How one method turns spectra into its ODF.

    Attributes
    ----------
    history : int
        Feature rows of the past the ODF needs, frames.
    unit : float
        Typical size of a clear onset's ODF step; the ODF is divided by it.
    attack_offset : float
        How far an attack lies before the end of the frame where the ODF peaks, in frame lengths
        (calibrated with clicks at the default frame and hop).
    """

    history: int
    unit: float
    attack_offset: float


def superflux_lag(frame_len: int, hop: int) -> int:
    """Frame lag of SuperFlux's difference: where the Hann windows overlap by half, at least 1 frame."""
    return max(1, round(frame_len / 4 / hop))


def spec_for(method: str, frame_len: int, hop: int) -> MethodSpec:
    """The :class:`MethodSpec` of ``method`` on a grid of ``frame_len`` and ``hop`` samples."""
    if method == "superflux":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.02, attack_offset=0.285)
    if method == "complex":
        return MethodSpec(history=2, unit=0.02, attack_offset=0.335)
    if method == "hfc":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.2, attack_offset=0.18)
    if method == "energy":
        return MethodSpec(history=superflux_lag(frame_len, hop), unit=0.2, attack_offset=0.19)
    raise ValueError(f"unknown method {method!r}")


def features(method: str, spectrum: C64, bank: Filterbank, bin_hz: float) -> Any:
    """Per-frame feature rows of ``method``.

    Parameters
    ----------
    method : str
        One of ``superflux``, ``complex``, ``hfc``, ``energy``.
    spectrum : ndarray, shape (n_frames, n_bins), complex64
        Scaled spectra from :func:`server.dsp.spectrum.windowed_spectrum`.
    bank : Filterbank
        Log filterbank (used by ``superflux``).
    bin_hz : float
        Width of one bin, Hz (used by ``hfc``).

    Returns
    -------
    ndarray, shape (n_frames, n_features)
        float32 log-band values (superflux), complex64 log-magnitude phasors (complex) or a float32
        single column (hfc, energy).
    """
    magnitude = np.abs(spectrum)
    if method == "superflux":
        return log_compress(apply_filterbank(magnitude, bank))
    if method == "complex":
        compressed = log_compress(magnitude)
        safe = np.where(magnitude > 0, magnitude, np.float32(1.0))
        return (spectrum / safe) * compressed
    power = np.square(magnitude)
    if method == "hfc":
        weights = (np.arange(spectrum.shape[1], dtype=np.float32) * np.float32(bin_hz / 1000.0)).astype(
            np.float32
        )
        return log_compress(np.sum(power * weights, axis=1, keepdims=True), LOG_GAIN**2)
    if method == "energy":
        return log_compress(np.sum(power, axis=1, keepdims=True), LOG_GAIN**2)
    raise ValueError(f"unknown method {method!r}")


def odf(method: str, feats: Any, history: int, unit: float) -> F64:
    """ODF of every frame after the first ``history`` rows of ``feats``.

    Parameters
    ----------
    method : str
    feats : ndarray, shape (history + n_frames, n_features)
        Feature rows, oldest first, the first ``history`` being the stream's past.
    history : int
        Rows of past context at the start of ``feats``.
    unit : float
        Divisor that makes a clear onset about 1.

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    if method == "complex":
        return complex_domain(feats, unit)
    current = feats[history:]
    reference = feats[: len(feats) - history]
    if method == "superflux":
        reference = max_filter_bands(reference)
    rise = np.maximum(current - reference, np.float32(0.0))
    return np.sum(rise, axis=1).astype(np.float64) / (rise.shape[1] * unit)


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


def complex_domain(phasors: C64, unit: float) -> F64:
    """Rectified complex-domain deviation on log-compressed magnitudes (Duxbury; Dixon, DAFx 2006).

    Each bin is predicted from the two previous frames (same magnitude, phase advanced by the previous
    phase step); only bins whose magnitude rises count.

    Parameters
    ----------
    phasors : ndarray, shape (2 + n_frames, n_bins), complex64
        Compressed magnitude times unit phasor, oldest first; the first two rows are the past.
    unit : float

    Returns
    -------
    ndarray, shape (n_frames,), float64
    """
    current = phasors[2:]
    prev = phasors[1:-1]
    prev2 = phasors[:-2]
    prev_mag = np.abs(prev)
    prev2_mag = np.abs(prev2)
    unit_prev = prev / np.where(prev_mag > 0, prev_mag, np.float32(1.0))
    unit_prev2 = prev2 / np.where(prev2_mag > 0, prev2_mag, np.float32(1.0))
    predicted = prev_mag * unit_prev * unit_prev * np.conj(unit_prev2)
    deviation = np.abs(current - predicted)
    rising = np.abs(current) > prev_mag
    total = np.sum(np.where(rising, deviation, np.float32(0.0)), axis=1).astype(np.float64)
    return total / (current.shape[1] * unit)
