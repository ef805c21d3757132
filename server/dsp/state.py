"""The per-stream state of an onset detector: one dataclass, read and written by the detector and the batch.

Everything a stream needs between blocks lives in :class:`StreamState`; everything derived from the rate,
settings and method lives in the shared :class:`~server.dsp.plan.Plan`. :func:`pack` and :func:`unpack`
turn the state into plain tuples, bytes and numbers for pickling, following the one field list of the
dataclass.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dsp.plan import FramePlan, Plan

F32 = npt.NDArray[np.float32]
FLOAT32 = np.dtype(np.float32)


@dataclasses.dataclass(slots=True)
class StreamState:
    """What one stream carries from block to block (frames are absolute indices from the stream's start).

    Attributes
    ----------
    tail : ndarray of float32
        Samples not yet framed, the last ``frame_len - hop`` or more of the stream.
    history : ndarray or None
        The last ``FramePlan.history`` feature rows; None after a switch of method: the next frame's row
        stands for all of them.
    recent : deque of (frame, peak)
        Frame peaks with decreasing values: the window maximum that sets the compression floor.
    samples_in : int
        Samples per channel consumed since the stream started.
    prime : int
        Frames whose ODF is still forced to 0 after a switch of method.
    odf : list of float
        Detection function from frame ``odf_base`` on: past context, then undecided frames.
    levels : list of float
        Frame powers, linear, aligned with ``odf``.
    odf_base : int
        Frame index of ``odf[0]``.
    next_frame : int
        First frame not yet decided.
    last_onset_s : float
        Time of the last reported onset, seconds (``-inf`` before the first).
    odf_out : list of float
        Detection function not yet taken by ``take_odf``.
    method_state : object
        A stateful method's own state (``OnsetMethod.initial_state``), None for a classical method.
    hold_until_s : float
        Onsets before this time are not reported: ``decide_pending`` reported them (``-inf`` if never).
    opening : ndarray of float32 or None
        The stream's first samples until its start is judged (``Plan.opening_len`` of them), then None.
    rows_out : list of ndarray or None
        With the row tap on (:meth:`OnsetDetector.tap_rows`), the log-filterbank magnitude rows of the new
        frames not yet taken, one array of shape (n_frames, n_bands) per pass; None when the tap is off.
    mask_level : float
        The forward mask's level at ``next_frame`` (:func:`~server.dsp.peaks.mask_levels`); 0 when the
        method has no mask.
    attack_windows : dict of int to ndarray of float32
        Without look-ahead: the samples of each undecided frame whose ODF reached the threshold (only those
        can be onsets). Where the attack lies (:func:`~server.dsp.attack.locate_attack`) and, with the row
        tap on, its energies (:func:`~server.dsp.attack.attack_energies`) are worked out from them only for
        the frames that become onsets.
    """

    # The first three are converted for pickling (see pack), the others pickle as they are.
    tail: F32
    history: Any
    recent: collections.deque[tuple[int, float]]
    samples_in: int
    prime: int
    odf: list[float]
    levels: list[float]
    odf_base: int
    next_frame: int
    last_onset_s: float
    odf_out: list[float]
    method_state: Any
    hold_until_s: float
    opening: F32 | None
    rows_out: list[F32] | None
    mask_level: float
    attack_windows: dict[int, F32]


def new_state(plan: Plan) -> StreamState:
    """The state of a stream that has not started: silence before its first sample."""
    frames = plan.frames
    grid = frames.grid
    return StreamState(
        samples_in=0,
        tail=np.zeros(grid.frame_len - grid.hop, dtype=np.float32),
        history=frames.silent_features,
        prime=0,
        recent=collections.deque(),
        odf=[0.0] * plan.context,
        levels=[0.0] * plan.context,
        odf_base=-plan.context,
        next_frame=0,
        last_onset_s=-math.inf,
        odf_out=[],
        method_state=initial_method_state(frames),
        hold_until_s=-math.inf,
        opening=np.zeros(0, dtype=np.float32),
        rows_out=None,
        mask_level=0.0,
        attack_windows={},
    )


def initial_method_state(frames: FramePlan) -> Any:
    """A new stream's method state: ``initial_state`` of a stateful method, None for a classical one."""
    make = frames.method.initial_state
    return None if make is None else make(frames)


def switch_method(state: StreamState, frames: FramePlan) -> None:
    """Start ``frames.method`` afresh mid-stream, keeping the samples, the ODF context and the onsets.

    Primed from the next frame: the new method starts without a jump, and the frame peaks of another
    method (in another unit) no longer set the compression floor.
    """
    state.history = None
    state.prime = frames.prime
    state.recent.clear()
    state.method_state = initial_method_state(frames)


FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(StreamState))
_PLAIN = operator.attrgetter(*FIELDS[3:])  # every field after tail, history and recent


def pack(state: StreamState) -> tuple[Any, ...]:
    """The fields of ``state`` in :data:`FIELDS` order for pickling: tail and history as bytes, the deque
    as a tuple, the other fields as they are."""
    history = state.history
    rows = None if history is None else history.tobytes()
    return (state.tail.tobytes(), rows, tuple(state.recent), *_PLAIN(state))


def unpack(values: tuple[Any, ...], start: int, frames: FramePlan) -> StreamState:
    """The state that :func:`pack` gave, from ``values[start]`` on, for a detector of plan ``frames``."""
    history = values[start + 1]
    if history is not None:
        silent = frames.silent_features
        history = np.ndarray(silent.shape, silent.dtype, history)  # read-only, like np.frombuffer
    tail = np.frombuffer(values[start], FLOAT32)
    return StreamState(tail, history, collections.deque(values[start + 2]), *values[start + 3 :])
