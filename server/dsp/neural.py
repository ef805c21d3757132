"""The learned onset detector as a stateful method: log bands per frame, then a causal network per stream.

The method's pieces, for the method table:

- :func:`constants`: the filterbank and the committed network, for the network's own grid only (40 ms
  frames, 10 ms hops; any other ``frame_ms`` or ``hop_ms`` is a :class:`~server.exceptions.SettingsError`);
- :func:`features`: each frame's log band magnitudes (:func:`~server.dsp.neural_features.log_band_rows`);
- :func:`initial_state` and :func:`step`: each stream's last log-band rows (for the rise features) and the
  network's per-layer buffers (:class:`NeuralState`), and the onset activation of new frames for many
  streams in one pass, divided by the calibrated unit.

Timing: the network marks the frame ending ``target_delay_frames`` hops (10–20 ms) after an onset, so an
onset's attack lies ``attack_offset_hops`` hops before the end of its peak frame; both are in the weights
file's metadata, with ``unit`` (the activation ``threshold`` 1.0 stands for).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from server.dsp import nn
from server.dsp.neural_features import (
    BANDS_PER_OCTAVE,
    FRAME_S,
    HOP_S,
    RISE_LAGS,
    Bank,
    feature_columns,
    fixed_bank,
    history,
    log_band_rows,
    network_grid,
)
from server.dsp.spectrum import FrameGrid
from server.exceptions import SettingsError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

WEIGHTS_FILE = Path(__file__).resolve().parent / "weights" / "onset_tcn_v2.npz"

FRAME_MS = 1000.0 * FRAME_S  # the grid the network was trained on, as the frame_ms and hop_ms settings
HOP_MS = 1000.0 * HOP_S

# Calibration of the committed weights, chosen on the corpus's tune split (train/README.md, "Model").
UNIT = 0.16  # the activation (0-1) that threshold 1.0 stands for
ATTACK_OFFSET_HOPS = 1.0  # the attack lies this many hops before the end of its peak frame
MASK_RATIO = 0.6  # a peak must reach this fraction of each earlier activation, decayed by its age ...
MASK_MS = 1000.0  # ... with this time constant, ms (server.dsp.peaks.mask_levels)
ATTACK_OFFSET = ATTACK_OFFSET_HOPS * HOP_S / FRAME_S  # the same in frame lengths, for the method table
WARMUP_FRAMES = 2  # ODF frames forced to 0 after a switch to the method mid-stream


def default_net() -> nn.Net:
    """The committed network (loaded once per process)."""
    return nn.load_net(str(WEIGHTS_FILE))


@dataclasses.dataclass(frozen=True, eq=False)
class NeuralConstants:
    """Read-only data of the method on one grid, shared by every stream.

    Attributes
    ----------
    bank : Bank
    net : Net
    """

    bank: Bank
    net: nn.Net


def constants(grid: FrameGrid, net: nn.Net | None = None) -> NeuralConstants:
    """The method's constants on ``grid``, which must be the network's own.

    Raises
    ------
    SettingsError
        If the grid's hop is not 10 ms or its frame not 40 ms (whole samples at the rate).
    """
    expected = network_grid(grid.sample_rate)
    if grid.hop != expected.hop:
        hop_ms = 1000.0 * grid.hop / grid.sample_rate
        raise SettingsError("hop_ms", round(hop_ms, 3), "the neural method runs at 10 ms hops only")
    if grid.frame_len != expected.frame_len:
        frame_ms = 1000.0 * grid.frame_len / grid.sample_rate
        raise SettingsError("frame_ms", round(frame_ms, 3), "the neural method uses 40 ms frames only")
    return NeuralConstants(
        bank=fixed_bank(grid.sample_rate, grid.fft_size, BANDS_PER_OCTAVE), net=net or default_net()
    )


def features(spectra: C64, consts: NeuralConstants) -> F32:
    """Log band rows of each frame, shape (n_frames, n_bands)."""
    return log_band_rows(spectra, consts.bank)


class NeuralState(NamedTuple):
    """One stream's state: what its next frames need from its past (a tuple: one is made per stream and
    pass).

    Attributes
    ----------
    past : ndarray, shape (max(RISE_LAGS), n_bands), float32, or None
        The last log band rows, oldest first. None until the stream's first frame: the past is then taken
        to be that frame held forever (silence at a stream's start; no jump after a switch of method).
    buffers : ndarray, shape (hidden, past_width), float32, or None
        The network's past columns (:func:`~server.dsp.nn.forward`); None with ``past``.
    """

    past: F32 | None = None
    buffers: F32 | None = None


def initial_state_of(consts: NeuralConstants) -> NeuralState:
    """A new stream's state, primed by its first frame (see :class:`NeuralState`)."""
    del consts
    return NeuralState()


def initial_state(frame_plan: Any) -> NeuralState:
    """:func:`initial_state_of` the plan's constants (the method table's ``initial_state``)."""
    return initial_state_of(frame_plan.constants)


def primed(consts: NeuralConstants, first_row: F32) -> NeuralState:
    """The state of a stream whose every past frame had the log bands ``first_row`` (no rise)."""
    past = np.repeat(first_row[None, :], history(), axis=0)
    column = feature_columns(past[:1], [past[:1]] * len(RISE_LAGS))
    return NeuralState(past=past, buffers=nn.steady_buffers(consts.net, column))


def step_with(
    consts: NeuralConstants, rows: Sequence[F32], states: Sequence[NeuralState], unit: float = UNIT
) -> tuple[list[F64], list[NeuralState]]:
    """ODF of several streams' new frames in one pass, and their new states (the old ones are kept as
    they were).

    Parameters
    ----------
    consts : NeuralConstants
    rows : sequence of ndarray, each shape (n_i, n_bands), float32
        Each stream's new log band rows, oldest first (any ``n_i >= 0``).
    states : sequence of NeuralState
    unit : float
        The activation the ODF's 1.0 stands for.

    Returns
    -------
    odfs : list of ndarray, each shape (n_i,), float64
        Activation divided by ``unit``.
    states : list of NeuralState
    """
    counts = [len(r) for r in rows]
    if sum(counts) == 0:
        return [np.zeros(0) for _ in rows], list(states)
    current = np.concatenate(rows) if len(rows) > 1 else np.ascontiguousarray(rows[0])
    odf, new_states = step_joined(consts, current, counts, states, unit)
    stops = np.cumsum(counts).tolist()
    return [odf[stop - count : stop] for stop, count in zip(stops, counts, strict=True)], new_states


def step_joined(
    consts: NeuralConstants, current: F32, counts: Sequence[int], states: Sequence[NeuralState], unit: float
) -> tuple[F64, list[NeuralState]]:
    """:func:`step_with` of the streams' new rows joined: ``current`` (shape (sum(counts), n_bands)), stream
    after stream, ``counts[i]`` rows of stream ``i`` (at least one in all); the ODF joined the same way."""
    count_array = np.asarray(counts, dtype=np.int64)
    total, members, past = int(count_array.sum()), len(counts), history()
    starts = np.cumsum(count_array) - count_array
    states = [
        primed(consts, current[start]) if s.past is None and count else s
        for start, count, s in zip(starts.tolist(), counts, states, strict=True)
    ]
    width = current.shape[1]
    empty = np.zeros((past, width), dtype=np.float32)
    if all(count == counts[0] for count in counts):  # every stream brings as many rows: slices of one array
        count = int(counts[0])
        full = np.empty((members, past + count, width), dtype=np.float32)
        np.stack([empty if s.past is None else s.past for s in states], out=full[:, :past])
        full[:, past:] = current.reshape(members, count, width)
        lagged = [full[:, past - lag : past - lag + count].reshape(total, width) for lag in RISE_LAGS]
        kept = full[:, count:]
    else:
        # Table: every new row, then each stream's past rows. Position p of stream m's sequence (its past,
        # then its new rows) is table row N + past * m + p while p < past, else its new row p - past.
        table = np.concatenate([current, *[empty if s.past is None else s.past for s in states]])
        member = np.repeat(np.arange(members, dtype=np.int64), count_array)

        def rows_at(stream: Any, position: Any) -> Any:
            inside = starts[stream] + position - past
            return np.where(position >= past, inside, total + past * stream + position)

        within = np.arange(total, dtype=np.int64) - starts[member] + past
        lagged = [table[rows_at(member, within - lag)] for lag in RISE_LAGS]
        keep = rows_at(np.repeat(np.arange(members), past), (count_array[:, None] + np.arange(past)).ravel())
        kept = table[keep].reshape(members, past, -1)
    columns = feature_columns(current, lagged)
    silent = nn.silent_buffers(consts.net)
    activations, pasts = nn.forward(
        consts.net, [silent if s.buffers is None else s.buffers for s in states], columns, counts
    )
    new_states = [
        NeuralState(rows, columns) if count else state
        for rows, columns, count, state in zip(kept, pasts, counts, states, strict=True)
    ]
    return np.divide(activations, unit, dtype=np.float64), new_states


def step(
    frame_plan: Any, rows: Sequence[F32], states: Sequence[NeuralState]
) -> tuple[list[F64], list[NeuralState]]:
    """:func:`step_with` the plan's constants (the method table's ``step``)."""
    return step_with(frame_plan.constants, rows, states, frame_plan.method.unit)
