"""What a detector derives from its sample rate, settings and method, built once and shared.

A :class:`FramePlan` holds everything the per-frame analysis needs (grid, window, the method's table row
and constants); detectors with equal plans can have their frames analysed together in one batch. A
:class:`Plan` adds the peak picker's parameters. Both are cached and read-only, so unpickling or
reconfiguring a detector costs one dictionary lookup.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import odf as odf_mod
from server.dsp.attack import BLOCK_S, PAST_S, RUN_IN_S
from server.dsp.methods import METHOD_TABLE, OnsetMethod
from server.dsp.opening import OPENING_S
from server.dsp.peaks import BASELINES, PRE_AVG_S, PRE_MAX_S, Baseline, mask_decay
from server.dsp.settings import DetectorSettings, settings_from_tuple
from server.dsp.spectrum import FrameGrid, analysis_window, level_norm, spectrum

ODF_KEEP_S = 10.0  # take_odf() returns at most this much of the most recent detection function
PASS_FFT_SAMPLES = 64 * 2048  # FFT input per batched pass, samples: arrays of about half a megabyte
CHUNK_HOPS = 128  # a detector's samples go through a pass at most this many hops at a time


@dataclasses.dataclass(frozen=True, eq=False)
class FramePlan:
    """Per-frame analysis of one method on one grid (compared by identity: one cached object per key).

    Attributes
    ----------
    method : OnsetMethod
        The method's row of :data:`~server.dsp.methods.METHOD_TABLE` (or of a caller's table).
    grid : FrameGrid
    window : ndarray of float32, shape (frame_len,)
        :func:`~server.dsp.spectrum.analysis_window`.
    level_norm : float
        :func:`~server.dsp.spectrum.level_norm` of the window, for :func:`~server.dsp.spectrum.frame_power`.
    constants : object
        ``method.constants(grid)``: the features' read-only data (a filterbank, bin weights).
    lags : tuple of int
        Which past feature rows the ODF of a frame compares with, frames back (empty for a stateful method).
    history : int
        Past feature rows a stream keeps, ``max(lags)`` (0 for a stateful method).
    prime : int
        Frames whose ODF is forced to 0 after a switch to this method mid-stream.
    floor_frames : int
        Frames of past frame peaks that set the compression floor.
    floor_scale, floor_low : float
        The compression floor is ``max(recent_peak * floor_scale, floor_low)`` (float32 values).
    silent_features : ndarray, shape (history, n_features)
        Feature rows of silent frames: the past of a new stream.
    pass_frames : int
        Most new frames analysed together in one batched pass.
    """

    method: OnsetMethod
    grid: FrameGrid
    window: npt.NDArray[np.float32]
    level_norm: float
    constants: Any
    lags: tuple[int, ...]
    history: int
    prime: int
    floor_frames: int
    floor_scale: float
    floor_low: float
    silent_features: Any
    pass_frames: int


@functools.lru_cache(maxsize=256)
def frame_plan(sample_rate: int, method: OnsetMethod, frame_ms: float, hop_ms: float) -> FramePlan:
    """The shared :class:`FramePlan` of a rate, method and grid."""
    grid = FrameGrid.from_seconds(sample_rate, frame_ms / 1000.0, hop_ms / 1000.0)
    window = analysis_window(grid.frame_len)
    constants = method.constants(grid)
    lags = () if method.lags is None else method.lags(grid)
    history = max(lags, default=0)
    silent_frames = np.zeros((history, grid.frame_len), dtype=np.float32) * window
    silent = method.features(spectrum(silent_frames, grid.fft_size), constants)
    silent.setflags(write=False)
    scale, low = method.floor
    return FramePlan(
        method=method,
        grid=grid,
        window=window,
        level_norm=level_norm(window),
        constants=constants,
        lags=lags,
        history=history,
        prime=method.warmup if method.stateful else history,
        floor_frames=round(odf_mod.FLOOR_WINDOW_S * sample_rate / grid.hop),
        floor_scale=float(scale),
        floor_low=float(low),
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
        Peak-picking windows; ``context = max(pre_max, pre_avg)`` past values are kept (one more without
        look-ahead, for :func:`~server.dsp.peaks.pick_peaks`'s ``rise_once``).
    odf_keep : int
        Most detection-function values kept for :meth:`OnsetDetector.take_odf`.
    threshold, mean_factor, min_power : float
        Threshold above the scaled baseline (the ``threshold`` setting), the baseline's factor, minimum
        frame power (linear).
    baseline : callable
        The method's :data:`~server.dsp.peaks.BASELINES` statistic of the last ``pre_avg`` frames.
    mask_ratio, mask_decay : float
        The method's forward mask: a peak must also reach ``mask_ratio`` times
        :func:`~server.dsp.peaks.mask_levels`, which decay by ``mask_decay`` per frame (0: no mask).
    min_interval_s : float
    attack_offset : float
        How far an attack lies before the end of its peak frame, samples.
    chunk_len : int
        Longest block analysed in one pass, ``CHUNK_HOPS`` hops, samples.
    opening_frames : int
        The first frames whose detection function sees the silence assumed before the stream: those whose
        window starts before the stream, plus ``frames.prime`` (the method's memory of its past) and the
        method's ``delay_frames``.
    opening_len : int
        Samples judged by :func:`~server.dsp.opening.opening_is_attack` before the first frame is decided:
        ``OPENING_S``, or up to the frame after the opening frames if that is later.
    silence_db : float
        The ``silence_db`` setting, dBFS.
    attack_search : (int, int) or None
        Without look-ahead: where an onset's attack is sought in its peak frame's samples
        (:func:`~server.dsp.attack.locate_attack`), as (first, stop) samples back from the frame's end: from
        one hop before the method's ``rise_offset`` (its ``attack_offset`` if None) to the end. None with a
        look-ahead (the peak shift places it then).
    attack_block, attack_past : int
        The locator's block (samples) and the blocks before one that it is compared with.
    attack_run_in : int
        Samples before an attack from which the filters of :func:`~server.dsp.attack.attack_energies` run
        (``RUN_IN_S``).
    """

    frames: FramePlan
    lookahead: int
    pre_max: int
    pre_avg: int
    context: int
    odf_keep: int
    threshold: float
    mean_factor: float
    baseline: Baseline
    mask_ratio: float
    mask_decay: float
    min_power: float
    min_interval_s: float
    attack_offset: float
    chunk_len: int
    opening_frames: int
    opening_len: int
    silence_db: float
    attack_search: tuple[int, int] | None = None
    attack_block: int = 1
    attack_past: int = 1
    attack_run_in: int = 0

    @property
    def latency_hops(self) -> int:
        """Algorithmic latency, hops: the look-ahead (the picker's plus the method's ``delay_frames``) + 1."""
        return self.lookahead + self.frames.method.delay_frames + 1


@functools.lru_cache(maxsize=1024)
def plan_for(sample_rate: int, settings: DetectorSettings, method: OnsetMethod | None = None) -> Plan:
    """The shared :class:`Plan` of a rate and settings.

    ``method`` is the row of ``settings.method``, from :data:`~server.dsp.methods.METHOD_TABLE` when
    omitted.
    """
    row = METHOD_TABLE[settings.method] if method is None else method
    frames = frame_plan(sample_rate, row, settings.frame_ms, settings.hop_ms)
    grid = frames.grid
    hop_s = grid.hop / sample_rate
    pre_max = max(1, round(PRE_MAX_S / hop_s))
    pre_avg = max(1, round(PRE_AVG_S / hop_s))
    opening_frames = -(-grid.frame_len // grid.hop) - 1 + frames.prime + row.delay_frames
    decay = mask_decay(row.mask_ms / 1000.0 / hop_s) if row.mask_ratio > 0.0 else 0.0
    lookahead_ms = row.default_lookahead_ms if settings.lookahead_ms is None else settings.lookahead_ms
    lookahead = max(0, round(lookahead_ms / 1000.0 / hop_s))
    attack_offset = row.attack_offset * grid.frame_len
    block = max(1, round(BLOCK_S * sample_rate))
    search = None
    if not lookahead:  # samples back from the frame's end: from one hop before the attack offset on
        rise_offset = attack_offset if row.rise_offset is None else row.rise_offset * grid.frame_len
        search = (round(rise_offset + grid.hop), 0)
    return Plan(
        frames=frames,
        lookahead=lookahead,
        pre_max=pre_max,
        pre_avg=pre_avg,
        context=max(pre_max, pre_avg) + (0 if lookahead else 1),  # without look-ahead: rise_once's frame
        odf_keep=round(ODF_KEEP_S / hop_s),
        threshold=settings.threshold,
        mean_factor=row.mean_factor,
        baseline=BASELINES[row.baseline],
        mask_ratio=row.mask_ratio if decay else 0.0,
        mask_decay=decay,
        min_power=10.0 ** (settings.silence_db / 10.0),
        min_interval_s=settings.min_interval_ms / 1000.0,
        attack_offset=attack_offset,
        chunk_len=CHUNK_HOPS * grid.hop,
        opening_frames=opening_frames,
        opening_len=max(round(OPENING_S * sample_rate), (opening_frames + 1) * grid.hop),
        silence_db=settings.silence_db,
        attack_search=search,
        attack_block=block,
        attack_past=max(1, round(PAST_S * sample_rate / block)),
        attack_run_in=round(RUN_IN_S * sample_rate),
    )


@functools.lru_cache(maxsize=1024)
def restore_plan(
    sample_rate: int, values: tuple[Any, ...], method: OnsetMethod | None = None
) -> tuple[DetectorSettings, Plan]:
    """Settings from :func:`~server.dsp.settings.settings_tuple` and their plan in one lookup (unpickling)."""
    settings = settings_from_tuple(values)
    return settings, plan_for(sample_rate, settings, method)
