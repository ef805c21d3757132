"""What a detector derives from its sample rate and settings, built once and shared.

A :class:`FramePlan` holds everything the per-frame analysis needs (grid, window, filterbank, the method's
spec); detectors with equal plans can have their frames analysed together in one batch. A :class:`Plan`
adds the peak picker's parameters. Both are cached and read-only, so unpickling or reconfiguring a detector
costs one dictionary lookup.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import odf as odf_mod
from server.dsp.filterbank import Filterbank, log_filterbank
from server.dsp.peaks import PRE_AVG_S, PRE_MAX_S
from server.dsp.settings import DetectorSettings, settings_from_tuple
from server.dsp.spectrum import FrameGrid, analysis_window, level_norm, spectrum

ODF_KEEP_S = 10.0  # take_odf() returns at most this much of the most recent detection function
PASS_FFT_SAMPLES = 64 * 2048  # FFT input per batched pass, samples: arrays of about half a megabyte


@dataclasses.dataclass(frozen=True, eq=False)
class FramePlan:
    """Per-frame analysis of one method on one grid (compared by identity: one cached object per key).

    Attributes
    ----------
    method : str
    grid : FrameGrid
    window : ndarray of float32, shape (frame_len,)
        :func:`~server.dsp.spectrum.analysis_window`.
    level_norm : float
        :func:`~server.dsp.spectrum.level_norm` of the window, for :func:`~server.dsp.spectrum.frame_power`.
    bank : Filterbank
        Log filterbank of the rate and FFT size (used by ``superflux``).
    spec : MethodSpec
    lags : tuple of int
        Which past feature rows the ODF of a frame compares with, frames back (``history`` is the largest).
    floor_frames : int
        Frames of past frame peaks that set the compression floor.
    floor_scale, floor_low : float
        The compression floor is ``max(recent_peak * floor_scale, floor_low)`` (float32 values).
    hfc_weights : ndarray of float32, shape (n_bins,)
        Bin weights of ``hfc``, kHz.
    silent_features : ndarray, shape (history, n_features)
        Feature rows of silent frames: the past of a new stream.
    pass_frames : int
        Most new frames analysed together in one batched pass.
    """

    method: str
    grid: FrameGrid
    window: npt.NDArray[np.float32]
    level_norm: float
    bank: Filterbank
    spec: odf_mod.MethodSpec
    lags: tuple[int, ...]
    floor_frames: int
    floor_scale: float
    floor_low: float
    hfc_weights: npt.NDArray[np.float32]
    silent_features: Any
    pass_frames: int

    @property
    def history(self) -> int:
        return self.spec.history


@functools.lru_cache(maxsize=256)
def frame_plan(sample_rate: int, method: str, frame_ms: float, hop_ms: float) -> FramePlan:
    """The shared :class:`FramePlan` of a rate, method and grid."""
    grid = FrameGrid.from_seconds(sample_rate, frame_ms / 1000.0, hop_ms / 1000.0)
    window = analysis_window(grid.frame_len)
    spec = odf_mod.spec_for(method, grid.frame_len, grid.hop)
    scale, low = odf_mod.floor_constants(method)
    weights = np.arange(grid.n_bins, dtype=np.float32) * np.float32(grid.bin_hz / 1000.0)
    weights.setflags(write=False)
    bank = log_filterbank(sample_rate, grid.fft_size)
    silent_frames = np.zeros((spec.history, grid.frame_len), dtype=np.float32) * window
    silent = odf_mod.features(method, spectrum(silent_frames, grid.fft_size), bank, grid.bin_hz, weights)
    silent.setflags(write=False)
    return FramePlan(
        method=method,
        grid=grid,
        window=window,
        level_norm=level_norm(window),
        bank=bank,
        spec=spec,
        lags=(1, 2) if method == "complex" else (spec.history,),
        floor_frames=round(odf_mod.FLOOR_WINDOW_S * sample_rate / grid.hop),
        floor_scale=float(scale),
        floor_low=float(low),
        hfc_weights=weights,
        silent_features=silent,
        pass_frames=max(8, PASS_FFT_SAMPLES // grid.fft_size),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A detector's :class:`FramePlan` plus its peak picker's parameters (frames unless named otherwise).

    Attributes
    ----------
    frames : FramePlan
    lookahead, pre_max, pre_avg : int
        Peak-picking windows; ``context = max(pre_max, pre_avg)`` past values are kept.
    odf_keep : int
        Most detection-function values kept for :meth:`OnsetDetector.take_odf`.
    delta, mean_factor, min_power : float
        Threshold margin, moving-mean factor, minimum frame power (linear).
    min_interval_s : float
    attack_offset : float
        How far an attack lies before the end of its peak frame, samples.
    """

    frames: FramePlan
    lookahead: int
    pre_max: int
    pre_avg: int
    context: int
    odf_keep: int
    delta: float
    mean_factor: float
    min_power: float
    min_interval_s: float
    attack_offset: float


@functools.lru_cache(maxsize=1024)
def plan_for(sample_rate: int, settings: DetectorSettings) -> Plan:
    """The shared :class:`Plan` of a rate and settings."""
    frames = frame_plan(sample_rate, settings.method, settings.frame_ms, settings.hop_ms)
    grid = frames.grid
    hop_s = grid.hop / sample_rate
    pre_max = max(1, round(PRE_MAX_S / hop_s))
    pre_avg = max(1, round(PRE_AVG_S / hop_s))
    return Plan(
        frames=frames,
        lookahead=round(settings.lookahead_ms / 1000.0 / hop_s),
        pre_max=pre_max,
        pre_avg=pre_avg,
        context=max(pre_max, pre_avg),
        odf_keep=round(ODF_KEEP_S / hop_s),
        delta=settings.threshold,
        mean_factor=frames.spec.mean_factor,
        min_power=10.0 ** (settings.silence_db / 10.0),
        min_interval_s=settings.min_interval_ms / 1000.0,
        attack_offset=frames.spec.attack_offset * grid.frame_len,
    )


@functools.lru_cache(maxsize=1024)
def restore_plan(sample_rate: int, values: tuple[Any, ...]) -> tuple[DetectorSettings, Plan]:
    """Settings from :func:`~server.dsp.settings.settings_tuple` and their plan in one lookup (unpickling)."""
    settings = settings_from_tuple(values)
    return settings, plan_for(sample_rate, settings)
