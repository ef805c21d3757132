"""The fused onset detector: the network's activation and the SuperFlux detection function, frame by frame.

Each frame's detection function is ``NEURAL_WEIGHT * neural + (1 - NEURAL_WEIGHT) * superflux``, each term
in its own method's unit (the ``neural`` activation over :data:`~server.dsp.neural.UNIT`, SuperFlux's mean
log rise over the ``superflux`` row's unit), so a clear onset is about 1 in both; the method's ``unit``
then rescales the sum. Before the sum, the network's term passes a forward mask of its own: it counts
only in frames where it reaches ``NET_MASK_RATIO`` times each of its earlier values, decayed by
``exp(-age / NET_MASK_MS)`` (:func:`~server.dsp.peaks.mask_levels`), so the activation's decay after a
strong hit (ringing, a room) adds nothing to the sum, while SuperFlux's term is left whole. Before that
the network's term is gated by level: it counts only in frames whose loudest SuperFlux band is within
``GATE_DB`` of the loudest band of the last ``FLOOR_WINDOW_S`` (the recent peak that sets SuperFlux's
compression floor), so the small activations of a fading tail add nothing either. Both terms are the
``neural`` and ``superflux`` methods' own detection functions on the network's grid (40 ms frames, 10 ms
hops); one peak picker (the median baseline, no mask of its own) follows.

The method's pieces, for the method table:

- :func:`constants`: the network's constants (:func:`server.dsp.neural.constants`, which refuses another
  grid) and SuperFlux's filterbank, lag and floor;
- :func:`features`: each frame's network input bands, then its SuperFlux band magnitudes, in one row;
- :func:`initial_state` and :func:`step`: the network's state (:class:`~server.dsp.neural.NeuralState`),
  the last SuperFlux rows and the recent band peaks (:class:`FusedState`).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp import neural
from server.dsp import odf as odf_mod
from server.dsp.filterbank import Filterbank, log_filterbank
from server.dsp.peaks import mask_decay, mask_levels
from server.dsp.spectrum import FrameGrid

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

# Chosen on the corpus's tune split (bench/fused_picker.py; README, "Onset accuracy by family").
NEURAL_WEIGHT = 0.4  # the network's share of the sum, the rest SuperFlux's
SUPERFLUX_UNIT = 0.03  # SuperFlux's mean log rise of a clear onset (the ``superflux`` row's unit)
GATE_DB = 35.0  # the network's term counts only within this many dB of the recent loudest band; 0: always
NET_MASK_RATIO = 0.8  # ... and only where it reaches this fraction of each of its earlier values ...
NET_MASK_MS = 1000.0  # ... decayed with this time constant, ms (server.dsp.peaks.mask_levels); 0: always
UNIT = 0.6  # the sum that ``threshold`` 1.0 stands for
MEAN_FACTOR = 1.0  # the picker: a peak must clear MEAN_FACTOR x the baseline of the last 100 ms + threshold
BASELINE = "median"  # ... that baseline (server.dsp.peaks.BASELINES)
MASK_RATIO = 0.0  # the picker's forward mask on the fused value (server.dsp.peaks.mask_levels); 0: none
MASK_MS = 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class FusedConstants:
    """Read-only data of the method on one grid, shared by every stream.

    Attributes
    ----------
    neural : NeuralConstants
    bank : Filterbank
        SuperFlux's log filterbank.
    lag : int
        SuperFlux's lag, frames (:func:`~server.dsp.odf.half_overlap_lag`).
    floor_frames : int
        Past frames whose band peaks set the compression floor and the gate (``FLOOR_WINDOW_S``).
    floor_scale, floor_low : float
        SuperFlux's compression floor (:func:`~server.dsp.odf.amplitude_floor`), as floats.
    gate_ratio : float
        The gate: a frame's loudest band over the recent loudest must reach this (0: no gate).
    mask_ratio, mask_decay : float
        The network term's forward mask: it must reach ``mask_ratio`` times its earlier values, decayed by
        ``mask_decay`` a frame (:func:`~server.dsp.peaks.mask_levels`); 0: no mask.
    """

    neural: neural.NeuralConstants
    bank: Filterbank
    lag: int
    floor_frames: int
    floor_scale: float
    floor_low: float
    gate_ratio: float
    mask_ratio: float
    mask_decay: float

    @property
    def n_neural(self) -> int:
        """Columns of a feature row that are the network's input bands."""
        return self.neural.bank.n_bands


def constants(grid: FrameGrid) -> FusedConstants:
    """The method's constants on ``grid``, which must be the network's own (else a ``SettingsError``)."""
    scale, low = odf_mod.amplitude_floor()
    return FusedConstants(
        neural=neural.constants(grid),
        bank=log_filterbank(grid.sample_rate, grid.fft_size),
        lag=odf_mod.half_overlap_lag(grid)[0],
        floor_frames=round(odf_mod.FLOOR_WINDOW_S * grid.sample_rate / grid.hop),
        floor_scale=float(scale),
        floor_low=float(low),
        gate_ratio=10.0 ** (-GATE_DB / 20.0) if GATE_DB > 0.0 else 0.0,
        mask_ratio=NET_MASK_RATIO if NET_MASK_MS > 0.0 else 0.0,
        mask_decay=mask_decay(NET_MASK_MS / 1000.0 * grid.sample_rate / grid.hop),
    )


def features(spectra: C64, consts: FusedConstants) -> F32:
    """Each frame's network bands, then its SuperFlux bands: float32, shape (n_frames, n_neural + n_bands)."""
    return np.concatenate(
        [neural.features(spectra, consts.neural), odf_mod.band_magnitudes(spectra, consts.bank)], axis=1
    )


@dataclasses.dataclass(frozen=True)
class FusedState:
    """One stream's state.

    Attributes
    ----------
    neural : NeuralState
        The network's.
    past : ndarray, shape (lag, n_bands), float32, or None
        The last SuperFlux rows, oldest first; None at the start: silence (zeros), as ``superflux``.
    recent : tuple of (int, float)
        Frame and loudest band of the frames that may still be the recent peak, decreasing peaks, oldest
        first (:func:`~server.dsp.odf.compression_floors`' window).
    frame : int
        Frames seen since the method started.
    mask_level : float
        The network term's forward mask level at the next frame.
    """

    neural: neural.NeuralState = dataclasses.field(default_factory=neural.NeuralState)
    past: F32 | None = None
    recent: tuple[tuple[int, float], ...] = ()
    frame: int = 0
    mask_level: float = 0.0


def initial_state(frame_plan: Any) -> FusedState:
    """A new stream's state (the method table's ``initial_state``)."""
    del frame_plan
    return FusedState()


def step_with(consts: FusedConstants, rows: Sequence[F32], states: Sequence[FusedState],
              unit: float = UNIT) -> tuple[list[F64], list[FusedState]]:
    """Fused detection function of several streams' new frames in one pass, and their new states (the old
    ones are kept as they were).

    Every step is row by row (element-wise maths, reductions along each row), or a recursion per stream
    carried in its state (the recent band peak, the network term's mask), so a frame's value never depends
    on which frames share its pass.

    Parameters
    ----------
    consts : FusedConstants
    rows : sequence of ndarray, each shape (n_i, n_neural + n_bands), float32
        Each stream's new feature rows (:func:`features`), oldest first (any ``n_i >= 0``).
    states : sequence of FusedState
    unit : float
        The fused value the ODF's 1.0 stands for.

    Returns
    -------
    odfs : list of ndarray, each shape (n_i,), float64
    states : list of FusedState
    """
    counts = [len(r) for r in rows]
    if sum(counts) == 0:
        return [np.zeros(0) for _ in rows], list(states)
    table = rows[0] if len(rows) == 1 else np.concatenate(rows)
    split, lag = consts.n_neural, consts.lag
    starts = np.cumsum([0, *counts]).tolist()
    learned, net_states = neural.step_with(
        consts.neural, [table[a:b, :split] for a, b in itertools.pairwise(starts)],
        [s.neural for s in states],
    )
    bands = table[:, split:]
    n_bands = bands.shape[1]
    silence = np.zeros((lag, n_bands), dtype=np.float32)  # the past of a stream's first frames
    pasts = [silence if state.past is None else state.past for state in states]
    kept: list[F32 | None]
    count = counts[0]
    if count and all(n == count for n in counts):  # every stream alike: one array of pasts and new rows
        joined = np.empty((len(rows), lag + count, n_bands), dtype=np.float32)
        np.stack(pasts, out=joined[:, :lag])
        joined[:, lag:] = bands.reshape(len(rows), count, n_bands)
        reference = joined[:, :count].reshape(-1, n_bands)
        kept = list(joined[:, count:])
    else:
        reference = np.empty_like(bands)
        kept = []
        for a, b, past in zip(starts, starts[1:], pasts, strict=False):
            n = b - a
            head = min(lag, n)  # frames whose reference is a past row
            reference[a : a + head] = past[:head]
            reference[a + head : b] = bands[a : b - lag]
            kept.append(bands[b - lag : b].copy() if n >= lag else np.concatenate([past[n:], bands[a:b]]))
    # The recent band peak of every new frame (each stream's window a deque copied from its state).
    peaks = odf_mod.row_max(bands).tolist()
    windows = [collections.deque(state.recent) for state in states]
    recent = odf_mod.recent_peaks_many(
        [(window, state.frame, n) for window, state, n in zip(windows, states, counts, strict=True)],
        peaks, consts.floor_frames,
    )
    scale, low, ratio = consts.floor_scale, consts.floor_low, consts.gate_ratio
    floor = np.array([f if (f := r * scale) > low else low for r in recent], dtype=np.float32)[:, None]
    net_all = np.concatenate(learned)
    if ratio:
        net_all = net_all * np.array([p >= r * ratio for p, r in zip(peaks, recent, strict=True)], dtype=bool)
    mask: list[float] = []
    levels_at = [state.mask_level for state in states]
    if consts.mask_ratio:
        gated = net_all.tolist()
        for k, (a, b) in enumerate(itertools.pairwise(starts)):
            if b > a:
                levels = mask_levels(gated, a, b, levels_at[k], consts.mask_decay)
                levels_at[k] = levels.pop()
                mask += levels
    new_states = [
        FusedState(neural=net_state, past=past, recent=tuple(window), frame=state.frame + n, mask_level=level)
        if n else state
        for state, net_state, past, window, n, level in zip(
            states, net_states, kept, windows, counts, levels_at, strict=True
        )
    ]
    flux = odf_mod.superflux_rise(bands, (reference,), SUPERFLUX_UNIT, floor)
    if consts.mask_ratio:
        net_all = net_all * (net_all >= consts.mask_ratio * np.array(mask))
    fused = (NEURAL_WEIGHT * net_all + (1.0 - NEURAL_WEIGHT) * flux) / unit
    return [fused[a:b] for a, b in itertools.pairwise(starts)], new_states


def step(
    frame_plan: Any, rows: Sequence[F32], states: Sequence[FusedState]
) -> tuple[list[F64], list[FusedState]]:
    """:func:`step_with` the plan's constants (the method table's ``step``)."""
    return step_with(frame_plan.constants, rows, states, frame_plan.method.unit)
