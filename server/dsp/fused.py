"""The fused onset detector: the network's activation and the SuperFlux detection function, frame by frame.

Each frame's detection function is ``NEURAL_WEIGHT * neural + (1 - NEURAL_WEIGHT) * superflux``, each term
in its own method's unit (the ``neural`` activation over :data:`~server.dsp.neural.UNIT`, SuperFlux's mean
log rise over the ``superflux`` row's unit), so a clear onset is about 1 in both; the method's ``unit``
then rescales the sum.

SuperFlux's term compares each frame's bands with a decaying hold of the earlier ones, not with the frame
before alone: each band's reference is the largest of its earlier (3-band max-filtered) values, each
lowered by ``HOLD_DB`` per hop of age (a recursion per band, carried in the state), so a band that only
comes back to a level it held a few hops before (vibrato, tremolo, a bow's or a voice's wobble, a stepped
swell) adds less, while a new note's bands, or a hit over a decayed sound, still rise (``HOLD_DB`` 0: the
frame before, the ``superflux`` method's own term).

The network's term passes a forward mask of its own: it counts only in frames where it reaches
``NET_MASK_RATIO`` times each of its earlier values, decayed by ``exp(-age / NET_MASK_MS)``
(:func:`~server.dsp.peaks.mask_levels`), so the activation's decay after a strong hit (ringing, a room)
adds nothing to the sum. Before that it is gated by level: it counts only in frames whose loudest SuperFlux
band is within ``GATE_DB`` of the loudest band of the last ``FLOOR_WINDOW_S`` (the recent peak that sets
SuperFlux's compression floor), so the small activations of a fading tail add nothing either. The
network's term is the ``neural`` method's own detection function, SuperFlux's that of the ``superflux``
method on the same grid (40 ms frames, 10 ms hops) but for the hold; one peak picker (the median baseline,
no mask of its own) follows.

The method's pieces, for the method table:

- :func:`constants`: the network's constants (:func:`server.dsp.neural.constants`, which refuses another
  grid) and SuperFlux's filterbank, hold and floor;
- :func:`features`: each frame's network input bands, then its SuperFlux band magnitudes, in one row;
- :func:`initial_state` and :func:`step`: the network's state (:class:`~server.dsp.neural.NeuralState`),
  SuperFlux's held reference and the recent band peaks (:class:`FusedState`).
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

# Chosen on the corpus's tune split (bench/fused_picker.py, bench/pitched_picker.py for HOLD_DB and UNIT;
# README, "Onset accuracy by family"; bench/README.md, "Branch `pitched`").
NEURAL_WEIGHT = 0.4  # the network's share of the sum, the rest SuperFlux's
SUPERFLUX_UNIT = 0.03  # SuperFlux's mean log rise of a clear onset (the ``superflux`` row's unit)
HOLD_DB = 2.0  # SuperFlux's reference: each earlier band value less this per hop of age, dB; 0: the last
GATE_DB = 35.0  # the network's term counts only within this many dB of the recent loudest band; 0: always
NET_MASK_RATIO = 0.8  # ... and only where it reaches this fraction of each of its earlier values ...
NET_MASK_MS = 1000.0  # ... decayed with this time constant, ms (server.dsp.peaks.mask_levels); 0: always
UNIT = 0.55  # the sum that ``threshold`` 1.0 stands for
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
    hold : float32
        Per-hop factor of SuperFlux's held reference (``HOLD_DB``; 0: the frame before alone).
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
    hold: np.float32
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
    """The method's constants on ``grid``, which must be the network's own (else a ``SettingsError``).

    On that grid SuperFlux's lag (:func:`~server.dsp.odf.half_overlap_lag`) is one hop: the hold starts from
    the frame before.
    """
    scale, low = odf_mod.amplitude_floor()
    constants = neural.constants(grid)
    assert odf_mod.half_overlap_lag(grid) == (1,)
    return FusedConstants(
        neural=constants,
        bank=log_filterbank(grid.sample_rate, grid.fft_size),
        hold=np.float32(10.0 ** (-HOLD_DB / 20.0) if HOLD_DB > 0.0 else 0.0),
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
    held : ndarray, shape (n_bands,), float32, or None
        SuperFlux's reference of the next frame: the largest of the earlier max-filtered rows, each lowered
        by the hold per hop of age; None at the start: silence (zeros), as ``superflux``.
    recent : tuple of (int, float)
        Frame and loudest band of the frames that may still be the recent peak, decreasing peaks, oldest
        first (:func:`~server.dsp.odf.compression_floors`' window).
    frame : int
        Frames seen since the method started.
    mask_level : float
        The network term's forward mask level at the next frame.
    """

    neural: neural.NeuralState = dataclasses.field(default_factory=neural.NeuralState)
    held: F32 | None = None
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
    carried in its state (the recent band peak, SuperFlux's held reference, the network term's mask), so a
    frame's value never depends on which frames share its pass.

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
    split = consts.n_neural
    starts = np.cumsum([0, *counts]).tolist()
    learned, net_states = neural.step_with(
        consts.neural, [table[a:b, :split] for a, b in itertools.pairwise(starts)],
        [s.neural for s in states],
    )
    bands = table[:, split:]
    peaks = odf_mod.row_max(bands).tolist()
    reference, nexts = held_references(consts.hold, odf_mod.max_filter_bands(bands), counts, states)
    # The recent band peak of every new frame (each stream's window a deque copied from its state).
    windows = [collections.deque(state.recent) for state in states]
    recent = odf_mod.recent_peaks_many(
        [(window, state.frame, n) for window, state, n in zip(windows, states, counts, strict=True)],
        peaks, consts.floor_frames,
    )
    scale, low, ratio = consts.floor_scale, consts.floor_low, consts.gate_ratio
    floor = np.array(odf_mod.floors_of(recent, scale, low), dtype=np.float32)[:, None]
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
        FusedState(neural=net_state, held=held, recent=tuple(window), frame=state.frame + n, mask_level=level)
        if n else state
        for state, net_state, held, window, n, level in zip(
            states, net_states, nexts, windows, counts, levels_at, strict=True
        )
    ]
    flux = odf_mod.mean_log_rise(bands, reference, SUPERFLUX_UNIT, floor)
    if consts.mask_ratio:
        net_all = net_all * (net_all >= consts.mask_ratio * np.array(mask))
    fused = (NEURAL_WEIGHT * net_all + (1.0 - NEURAL_WEIGHT) * flux) / unit
    return [fused[a:b] for a, b in itertools.pairwise(starts)], new_states


def held_references(hold: np.float32, filtered: F32, counts: Sequence[int],
                    states: Sequence[FusedState]) -> tuple[F32, list[F32 | None]]:
    """SuperFlux's reference of every new frame of every stream, and each stream's reference of its next
    frame.

    The reference of a stream's frame ``t`` is ``max(filtered[t - 1], hold * reference[t - 1])`` (float32,
    band by band; zeros before the stream's first frame): a recursion, run for all streams at once frame
    position by frame position, so each value is the same whatever the blocks and the other streams.

    Parameters
    ----------
    hold : float32
        :attr:`FusedConstants.hold`.
    filtered : ndarray, shape (n_frames, n_bands), float32
        The new rows of every stream, in turn, max-filtered across bands
        (:func:`~server.dsp.odf.max_filter_bands`).
    counts : sequence of int
        Each stream's number of new rows.
    states : sequence of FusedState

    Returns
    -------
    references : ndarray, shape (n_frames, n_bands), float32
    nexts : list of ndarray, shape (n_bands,), float32, or None
        Each stream's reference of its next frame (None for a stream without new rows).
    """
    n_bands = filtered.shape[1]
    out = np.empty_like(filtered)
    nexts: list[F32 | None] = [None] * len(counts)
    starts = list(itertools.accumulate(counts, initial=0))
    live = [i for i, count in enumerate(counts) if count]
    zeros = np.zeros(n_bands, dtype=np.float32)
    if len(live) == 1:  # one stream (a file, a lone stream): its rows in turn
        i = live[0]
        held = states[i].held
        level = zeros if held is None else held
        for row in range(starts[i], starts[i + 1]):
            out[row] = level
            level = np.maximum(filtered[row], level * hold)
        nexts[i] = level
        return out, nexts
    if not live:
        return out, nexts
    first = np.array([starts[i] for i in live])
    length = np.array([counts[i] for i in live])
    level = np.stack([held if (held := states[i].held) is not None else zeros for i in live])
    for j in range(int(length.max())):
        if j < length.min():
            rows = first + j
            out[rows] = level
            level = np.maximum(filtered[rows], level * hold)
            continue
        on = length > j
        rows = first[on] + j
        out[rows] = level[on]
        level[on] = np.maximum(filtered[rows], level[on] * hold)
    for k, i in enumerate(live):
        nexts[i] = level[k]
    return out, nexts


def step(
    frame_plan: Any, rows: Sequence[F32], states: Sequence[FusedState]
) -> tuple[list[F64], list[FusedState]]:
    """:func:`step_with` the plan's constants (the method table's ``step``)."""
    return step_with(frame_plan.constants, rows, states, frame_plan.method.unit)
