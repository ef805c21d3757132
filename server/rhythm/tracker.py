"""The online beat tracker: one small stateful object per stream.

It is fed onset strength, one value per analysis hop (:func:`server.rhythm.features.beat_strength`: the
detector's ``take_odf()`` plus the band rise), and runs the forward filter of :mod:`server.rhythm.statespace`
on a coarser 20 ms grid (the maximum of each run of input values). Each frame's strength, divided by its
moving mean, sets how much likelier a beat state is than any other. After each frame the most likely state
says where the beat is; a beat is reported at the first frame whose most likely state sits on a beat, at most
a tenth of an interval after it, no sooner than half an interval after the last reported one, once the
confidence reaches ``min_confidence``, and not after ``hold_s`` without sound. It never looks ahead: a beat is
sent as soon as the tracker commits to it, and ``tempo()`` predicts the next one.

State is the forward variable (a few thousand float64), the input not yet framed, the running mean of the
strength, and the last beat; the state space itself is shared and cached, so the pickle stays small.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from server.rhythm.beat import Beat, Tempo
from server.rhythm.settings import TrackerSettings
from server.rhythm.statespace import StateSpace, forward_step, state_space, tempo_marginal

F32 = npt.NDArray[np.float32]

STATE_VERSION = 1
TEMPO_WINDOW = 0.06  # tempi within this relative distance of the most likely one make the reported bpm
NORMALISE_FRAMES = 8  # the forward variable is scaled to sum 1 every this many frames (ratio <= 1e8)
PHASE_WINDOW = 0.08  # states within this fraction of a beat of the most likely phase make the confidence


def space_for(settings: TrackerSettings) -> StateSpace:
    """The (cached) state space of ``settings``."""
    return state_space(
        1.0 / settings.frame_s,
        min_bpm=settings.min_bpm,
        max_bpm=settings.max_bpm,
        change_lambda=settings.change_lambda,
        prior_bpm=settings.prior_bpm,
        prior_octaves=settings.prior_octaves,
        prior_weight=settings.prior_weight,
        beat_width=settings.beat_width,
        jump=settings.jump,
    )


def beat_ratio(strength: float, mean: float, settings: TrackerSettings) -> float:
    """Likelihood ratio of a beat state over any other for one frame's onset strength.

    ``((min(strength / (reference * mean), cap) + floor) / (1 + floor)) ** sharpness``: 1 for a frame at
    the reference, above 1 for a stronger onset, ``(floor / (1 + floor)) ** sharpness`` for a frame
    without any.
    """
    z = min(strength / (settings.reference * mean), settings.cap) if mean > 0.0 else 0.0
    return float(((z + settings.floor) / (1.0 + settings.floor)) ** settings.sharpness)


class BeatTracker:
    """Causal beat and tempo tracker for one stream.

    Parameters
    ----------
    hop_s : float
        Time between consecutive input values, seconds (the detector's hop).
    settings : TrackerSettings, optional
    time_offset_s : float
        Stream time of input value 0, seconds (value ``i`` is at ``i * hop_s + time_offset_s``).
    """

    _alpha: npt.NDArray[np.float64] | None  # the forward variable; None: silent so long that it is forgotten

    def __init__(
        self, hop_s: float, settings: TrackerSettings | None = None, *, time_offset_s: float = 0.0
    ) -> None:
        if not (math.isfinite(hop_s) and 0.0 < hop_s <= 0.05):
            raise ValueError(f"hop_s must be in (0, 0.05] seconds, got {hop_s!r}")
        self._hop_s = float(hop_s)
        self._offset_s = float(time_offset_s)
        self._use_settings(settings or TrackerSettings())
        self.reset()

    # ----------------------------------------------------------------------------------------------
    # Public API

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    @property
    def frames_in(self) -> int:
        """Input values consumed since the stream started."""
        return self._n_in

    def reset(self) -> None:
        """Start a new stream: time 0, no tempo."""
        self._n_in = 0
        self._step = -1  # index of the last completed frame
        self._group_max = -1.0
        self._group_arg = 0
        self._mean = 0.0
        self._last_active = -(10**9)  # input index of the last value reaching `activity`
        self._forget()

    def process(self, strength: npt.ArrayLike) -> list[Beat]:
        """Feed the next onset-strength values (one per hop); return the beats committed to.

        Parameters
        ----------
        strength : array_like, shape (n,)
            Non-negative onset strength, e.g. ``OnsetDetector.take_odf()``; any ``n >= 0``.

        Raises
        ------
        ValueError
            For a value that is negative, NaN or infinite; the tracker is then unchanged.
        """
        values: list[float] = np.ravel(strength).tolist()
        for value in values:
            if not 0.0 <= value < math.inf:  # NaN fails too
                raise ValueError(f"onset strength must be finite and non-negative, got {value!r}")
        beats: list[Beat] = []
        activity = self._settings.activity
        for value in values:
            if value >= activity:
                self._last_active = self._n_in
            if value > self._group_max:
                self._group_max = value
                self._group_arg = self._n_in
            self._n_in += 1
            if self._n_in % self._per_frame == 0:
                beat = self._frame()
                if beat is not None:
                    beats.append(beat)
        return beats

    def tempo(self) -> Tempo | None:
        """The current tempo, its confidence and the next predicted beat; None before the first beat."""
        if self._alpha is None or self._best < 0:
            return None
        space = self._space
        tempo = int(space.tempo_of[self._best])
        interval = int(space.intervals[tempo])
        position = int(space.position_of[self._best])
        next_frame = self._step + interval - position
        return Tempo(
            bpm=self._bpm(tempo),
            confidence=self._confidence(),
            next_beat_time=self._time_of(next_frame * self._per_frame + (self._per_frame - 1) / 2),
        )

    # ----------------------------------------------------------------------------------------------
    # Pickling: the state space is looked up again, not stored.

    def __getstate__(self) -> tuple[Any, ...]:
        alpha = self._alpha
        return (
            STATE_VERSION,
            self._hop_s,
            self._offset_s,
            dataclasses.astuple(self._settings),
            self._n_in,
            self._step,
            self._group_max,
            self._group_arg,
            self._mean,
            self._last_active,
            None if alpha is None else alpha.tobytes(),
            self._best,
            self._last_beat,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if state[0] != STATE_VERSION:
            raise ValueError(f"beat tracker state version {state[0]} is not {STATE_VERSION}")
        (
            _,
            self._hop_s,
            self._offset_s,
            values,
            self._n_in,
            self._step,
            self._group_max,
            self._group_arg,
            self._mean,
            self._last_active,
            alpha,
            self._best,
            self._last_beat,
        ) = state
        self._use_settings(TrackerSettings(*values))
        self._alpha = None if alpha is None else np.frombuffer(alpha, dtype=np.float64).copy()

    # ----------------------------------------------------------------------------------------------

    def _use_settings(self, settings: TrackerSettings) -> None:
        self._settings = settings
        self._per_frame = max(1, round(settings.frame_s / self._hop_s))
        frame_s = self._per_frame * self._hop_s
        self._space = space_for(dataclasses.replace(settings, frame_s=frame_s))
        self._mean_rate = 1.0 - math.exp(-frame_s / settings.norm_s)
        self._hold = round(settings.hold_s / self._hop_s)
        self._reset_after = round(settings.reset_s / self._hop_s)

    def _forget(self) -> None:
        self._alpha = None
        self._best = -1
        self._last_beat = -(10**9)  # frame of the last reported beat

    def _time_of(self, index: float) -> float:
        return index * self._hop_s + self._offset_s

    def _frame(self) -> Beat | None:
        """One frame of the tracker's grid is complete: update, and report a beat if one is due."""
        self._step += 1
        strength, arg = self._group_max, self._group_arg
        self._group_max = -1.0
        silent_for = self._n_in - 1 - self._last_active
        if silent_for >= self._reset_after:
            if self._alpha is not None:
                self._forget()
            return None
        self._mean += self._mean_rate * (strength - self._mean)
        if self._alpha is None:
            self._alpha = self._space.prior.copy()
        space = self._space
        normalise = self._step % NORMALISE_FRAMES == 0
        best = forward_step(
            self._alpha, space, beat_ratio(strength, self._mean, self._settings), normalise=normalise
        )
        self._best = best
        position = space.position_list[best]
        interval = space.interval_list[best]
        beat_frame = self._step - position
        if position > max(1, interval // 10) or beat_frame - self._last_beat < interval / 2:
            return None
        if silent_for >= self._hold:
            return None
        confidence = self._confidence()
        if confidence < self._settings.min_confidence:
            return None
        self._last_beat = beat_frame
        if position == 0 and strength >= self._settings.activity:
            index: float = arg  # the strongest input value of the beat's frame
        else:
            index = beat_frame * self._per_frame + (self._per_frame - 1) / 2
        tempo = int(space.tempo_of[best])
        return Beat(time=self._time_of(index), bpm=self._bpm(tempo), confidence=confidence)

    def _bpm(self, tempo: int) -> float:
        """Posterior mean tempo over the tempi near ``tempo``, beats per minute."""
        assert self._alpha is not None
        space = self._space
        self._alpha *= 1.0 / np.add.reduce(self._alpha)
        marginal = tempo_marginal(self._alpha, space)
        interval = space.intervals[tempo]
        near = np.abs(space.intervals / interval - 1.0) <= TEMPO_WINDOW
        weights = marginal[near]
        total = float(weights.sum())
        if total <= 0.0:
            return float(space.bpm[tempo])
        return float(weights @ space.bpm[near] / total)

    def _confidence(self) -> float:
        """How sure the tracker is of its tempo and of its phase, 0–1.

        The product of two probabilities: of the tempi within ``TEMPO_WINDOW`` of the most likely state's,
        and of the states whose phase is within ``PHASE_WINDOW`` of a beat of the most likely state's.
        """
        assert self._alpha is not None
        space = self._space
        self._alpha *= 1.0 / np.add.reduce(self._alpha)
        best = self._best
        interval = space.intervals[space.tempo_of[best]]
        near_tempo = np.abs(space.intervals / interval - 1.0) <= TEMPO_WINDOW
        tempo_mass = float(tempo_marginal(self._alpha, space)[near_tempo].sum())
        phase = space.phase_of - space.phase_of[best]
        phase -= np.round(phase)
        phase_mass = float(self._alpha[np.abs(phase) <= PHASE_WINDOW].sum())
        return min(1.0, tempo_mass * phase_mass)
