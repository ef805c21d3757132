"""The online beat tracker: one small stateful object per stream.

It is fed onset strength, one value per analysis hop (:func:`server.rhythm.features.beat_strength`: the
detector's ``take_odf()`` plus the band rise), and runs the forward filter of :mod:`server.rhythm.statespace`
on a coarser 20 ms grid (the maximum of each run of input values). Each frame's strength, divided by its
moving mean, sets how much likelier a beat state is than any other. After each frame the most likely state
says where the beat is; a beat is reported at the first frame whose most likely state sits on a beat, at most
a tenth of an interval after it, no sooner than half an interval after the last reported one, once the
confidence reaches ``min_confidence``, and not after ``hold_s`` without sound. It never looks ahead: a beat is
sent as soon as the tracker commits to it, and ``tempo()`` predicts the next one.

State is the forward variable (a few thousand float32), the input not yet framed, the running mean of the
strength, and the last beat; the state space itself is shared and cached, so the pickle stays small.
:func:`advance_trackers` steps many streams' trackers at once: their forward variables become rows of one
array (kept between calls while the same trackers step together), one numpy pass per frame for all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from server.rhythm.beat import Beat, Tempo
from server.rhythm.settings import TrackerSettings
from server.rhythm.statespace import RingBank, StateSpace, state_space

F32 = npt.NDArray[np.float32]

STATE_VERSION = 4  # 2: the forward variable in the ring layout; 3: the beat intervals' run (_run); 4: float32
NORMALISE_FRAMES = 8  # the forward variable is scaled to sum 1 every this many frames, or more often when
GROWTH_LIMIT = 1e30  # the largest ratio to that power could pass this (float32 ends at 3.4e38)
PHASE_WINDOW = 0.08  # states within this fraction of a beat of the most likely phase make the confidence
RUN_BEATS = 4  # a beat's bpm is the mean beat interval of the tracker's tempo at up to this many beats,
RUN_SLACK_FRAMES = 1.0  # those since its interval last moved by more than this many frames from their mean


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

    _alpha: npt.NDArray[np.float32] | None  # the forward variable; None: silent so long that it is forgotten
    _bank: RingBank | None  # the bank whose row _row _alpha is (advance_trackers), or None
    _run: list[float]  # the tracker's beat interval at its last (up to RUN_BEATS) beats, frames (_run_bpm)

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

        See Also
        --------
        advance_trackers : the same for many trackers at once (this is it for one).
        """
        return advance_trackers([self], [np.ravel(strength).tolist()])[0]

    def tempo(self) -> Tempo | None:
        """The current tempo, its confidence and the next predicted beat; None before the first beat."""
        if self._alpha is None or self._best < 0:
            return None
        space = self._space
        tempo = int(space.tempo_of[self._best])
        interval = int(space.intervals[tempo])
        position = (space.position_list[self._best] + self._step) % interval
        next_frame = self._step + interval - position
        bpm, confidence = self._summary()
        return Tempo(
            bpm=self._run_bpm(bpm, commit=False),
            confidence=confidence,
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
            list(self._run),
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
            run,
        ) = state
        self._run = list(run)
        self._use_settings(TrackerSettings(*values))
        self._alpha = None if alpha is None else np.frombuffer(alpha, dtype=np.float32).copy()
        self._bank = None
        self._row = 0
        self._summary_step = -2
        self._summary_values = (0.0, 0.0)

    # ----------------------------------------------------------------------------------------------

    def _use_settings(self, settings: TrackerSettings) -> None:
        self._settings = settings
        self._per_frame = max(1, round(settings.frame_s / self._hop_s))
        frame_s = self._per_frame * self._hop_s
        self._space = space_for(dataclasses.replace(settings, frame_s=frame_s))
        self._mean_rate = 1.0 - math.exp(-frame_s / settings.norm_s)
        top = ((settings.cap + settings.floor) / (1.0 + settings.floor)) ** settings.sharpness  # top ratio:
        frames = int(math.log(GROWTH_LIMIT) / math.log(top)) if top > 1.0 else NORMALISE_FRAMES
        self._normalise_every = max(1, min(NORMALISE_FRAMES, frames))  # 2,074 at the defaults, so 8
        self._hold = round(settings.hold_s / self._hop_s)
        self._reset_after = round(settings.reset_s / self._hop_s)

    def _forget(self) -> None:
        self._alpha = None
        self._bank = None
        self._row = 0
        self._summary_step = -2  # the frame of _summary_values (none)
        self._summary_values = (0.0, 0.0)
        self._best = -1
        self._last_beat = -(10**9)  # frame of the last reported beat
        self._run = []

    def _time_of(self, index: float) -> float:
        return index * self._hop_s + self._offset_s

    def _take_values(self, values: list[float]) -> list[tuple[float, int, int]]:
        """Consume input values; per tracker frame they complete: (its strength, the input index of that
        strongest value, input values since the last that reached ``activity``)."""
        activity, per_frame = self._settings.activity, self._per_frame
        n_in, group_max, group_arg = self._n_in, self._group_max, self._group_arg
        last_active = self._last_active
        if len(values) == per_frame and not n_in % per_frame:  # one whole frame (the usual live block)
            strength = max(values)  # (no value of this frame is in yet: group_max is -1)
            for index in range(per_frame - 1, -1, -1):
                if values[index] >= activity:
                    last_active = self._last_active = n_in + index
                    break
            self._n_in = n_in + per_frame
            return [(strength, n_in + values.index(strength), per_frame - 1 - (last_active - n_in))]
        done: list[tuple[float, int, int]] = []
        for value in values:
            if value >= activity:
                last_active = n_in
            if value > group_max:
                group_max = value
                group_arg = n_in
            n_in += 1
            if n_in % per_frame == 0:
                done.append((group_max, group_arg, n_in - 1 - last_active))
                group_max = -1.0
        self._n_in, self._group_max, self._group_arg = n_in, group_max, group_arg
        self._last_active = last_active
        return done

    def _advance_alone(self, frames: list[tuple[float, int, int]]) -> list[Beat]:
        """:func:`advance_trackers` of this tracker alone: step the forward filter once per frame of
        :meth:`_take_values`; the beats committed to."""
        beats = []
        space = self._space
        for frame in frames:
            ratio = self._before_step(frame)
            if ratio is None:
                continue
            bank = self._bank
            if bank is None:
                bank = _bank_of(space, [self])
            normalise = [self._row] if not self._step % self._normalise_every else []
            slot = bank.step([self._row], [ratio], normalise)[0]  # (a bank of this row alone: the 1-D path)
            beat = self._after_step(slot, frame)
            if beat is not None:
                beats.append(beat)
        return beats

    def _before_step(self, frame: tuple[float, int, int]) -> float | None:
        """A frame of the tracker's grid is complete: the likelihood ratio to step the forward filter with,
        or None (silent so long that tempo and phase are forgotten: no step).

        The ratio of a beat state over any other for the frame's onset strength ``s`` and moving mean ``m``:
        ``((min(s / (reference * m), cap) + floor) / (1 + floor)) ** sharpness``: 1 for a frame at the
        reference, above 1 for a stronger onset, ``(floor / (1 + floor)) ** sharpness`` for a frame without
        any.
        """
        strength, _, silent_for = frame
        self._step += 1
        if silent_for >= self._reset_after:
            if self._alpha is not None:
                self._forget()
            return None
        mean = self._mean = self._mean + self._mean_rate * (strength - self._mean)
        if self._alpha is None:
            self._alpha = self._space.prior.copy()  # the same in every ring layout
            self._bank = None
        settings = self._settings
        z = min(strength / (settings.reference * mean), settings.cap) if mean > 0.0 else 0.0
        ratio: float = ((z + settings.floor) / (1.0 + settings.floor)) ** settings.sharpness
        return ratio

    def _after_step(self, best: int, frame: tuple[float, int, int]) -> Beat | None:
        """After the step (most likely slot ``best``): report a beat if one is due, i.e. ``best`` is at most a
        tenth of an interval after a beat (at most one frame for intervals under 20 frames)."""
        self._best = best
        space = self._space
        interval = space.interval_list[best]
        position = (space.position_list[best] + self._step) % interval
        if position > 1 and position > interval // 10:  # no beat is due
            return None
        strength, arg, silent_for = frame
        beat_frame = self._step - position
        if beat_frame - self._last_beat < interval / 2:
            return None
        if silent_for >= self._hold:
            return None
        bpm, confidence = self._summary()
        if confidence < self._settings.min_confidence:
            return None
        self._last_beat = beat_frame
        bpm = self._run_bpm(bpm, commit=True)
        if position == 0 and strength >= self._settings.activity:
            index: float = arg  # the strongest input value of the beat's frame
        else:
            index = beat_frame * self._per_frame + (self._per_frame - 1) / 2
        return Beat(time=self._time_of(index), bpm=bpm, confidence=confidence)

    def _run_bpm(self, bpm: float, *, commit: bool) -> float:
        """The tempo to report for the tracker's tempo ``bpm`` now (its posterior mean near the most likely
        state): the mean beat interval over it and the last beats' since the tempo last moved.

        On a grid of whole frames a tempo between two intervals is followed by stepping between them (190
        BPM, 15.8 frames of 20 ms: 16, 16, 16, 16, 15, ...), so one beat's interval is up to a frame off, 6 %
        at 190 BPM; the mean over ``RUN_BEATS`` beats is the tempo the steps make. A beat whose interval is
        more than ``RUN_SLACK_FRAMES`` from the run's mean starts a new run (a new tempo, reported at once).
        ``commit``: the beat is reported, its interval joins the run."""
        fps = self._space.fps
        period = 60.0 * fps / bpm
        run = self._run
        if run and abs(period - sum(run) / len(run)) > RUN_SLACK_FRAMES:
            run = []
        run = [*run[1 - RUN_BEATS:], period]
        if commit:
            self._run = run
        return 60.0 * fps * len(run) / sum(run)

    def _summary(self) -> tuple[float, float]:
        """The tempo and the confidence at the current frame (worked out once per frame).

        Tempo: the posterior mean over the tempi within ``TEMPO_WINDOW`` of the most likely state's, beats
        per minute. Confidence, 0–1: the product of two probabilities, of those tempi and of the states
        whose phase is within ``PHASE_WINDOW`` of a beat of the most likely state's.
        """
        if self._summary_step == self._step:
            return self._summary_values
        alpha = self._alpha
        assert alpha is not None
        space = self._space
        total = float(np.add.reduce(alpha))  # (alpha is left as it is: asking for the tempo changes nothing)
        best = self._best
        tempo = space.tempo_list[best]
        start, stop, offsets, near_bpm = space.near_tempo_slices[tempo]
        weights = np.add.reduceat(alpha[start:stop], offsets)  # tempo_marginal(alpha, space)[near]
        near_mass = float(np.add.reduce(weights))
        bpm = float(weights @ near_bpm / near_mass) if near_mass > 0.0 else space.bpm_list[tempo]
        if not total > 0.0:  # (cannot happen: every likelihood ratio is positive)
            return bpm, 0.0
        phase0, rate = space.phase_rates
        phase = np.subtract(phase0, phase0[best])
        drift = np.subtract(rate, rate[best])
        drift *= self._step
        phase += drift
        phase -= np.rint(phase, out=drift)  # np.round to whole numbers
        near = np.abs(phase, out=phase) <= PHASE_WINDOW
        phase_mass = float(np.add.reduce(alpha[near]))
        self._summary_step = self._step
        self._summary_values = (bpm, min(1.0, (near_mass / total) * (phase_mass / total)))
        return self._summary_values


def advance_trackers(trackers: list[BeatTracker], values: list[list[float]]) -> list[list[Beat]]:
    """Feed each tracker its next onset-strength values; return each one's beats.

    The same as ``[t.process(v) for t, v in zip(trackers, values)]``, bitwise, with the forward filters of
    the trackers that complete a frame stepped together (:class:`~server.rhythm.statespace.RingBank`).

    Raises
    ------
    ValueError
        For a value that is negative, NaN or infinite; no tracker has changed then.
    """
    for row in values:
        if row and not (min(row) >= 0.0 and sum(row) < math.inf):  # a NaN makes the sum NaN
            for value in row:
                if not 0.0 <= value < math.inf:  # NaN fails too
                    raise ValueError(f"onset strength must be finite and non-negative, got {value!r}")
    if len(trackers) == 1 == len(values):  # a stream alone (a whole file, a lone live stream): no batch
        tracker = trackers[0]
        return [tracker._advance_alone(tracker._take_values(values[0]))]
    if trackers and _one_frame_each(trackers, values):
        return _advance_one_frame(trackers, values)
    frames = [tracker._take_values(row) for tracker, row in zip(trackers, values, strict=True)]
    beats: list[list[Beat]] = [[] for _ in trackers]
    for round_ in range(max(map(len, frames), default=0)):
        stepping: dict[StateSpace, tuple[list[int], list[float]]] = {}
        for index, (tracker, done) in enumerate(zip(trackers, frames, strict=True)):
            if round_ < len(done):
                ratio = tracker._before_step(done[round_])
                if ratio is not None:
                    members, ratios = stepping.setdefault(tracker._space, ([], []))
                    members.append(index)
                    ratios.append(ratio)
        for space, (members, ratios) in stepping.items():
            group = [trackers[index] for index in members]
            bank = _bank_of(space, group)
            rows = [t._row for t in group]
            normalise = [t._row for t in group if not t._step % t._normalise_every]
            best = bank.step(rows, ratios, normalise)
            for index, tracker, slot in zip(members, group, best, strict=True):
                beat = tracker._after_step(slot, frames[index][round_])
                if beat is not None:
                    beats[index].append(beat)
    return beats


def _one_frame_each(trackers: list[BeatTracker], values: list[list[float]]) -> bool:
    """Whether each tracker completes exactly one frame with its ``values`` (a live batch of 20 ms blocks,
    the usual case), all of them on one state space: :func:`_advance_one_frame` applies."""
    space = trackers[0]._space
    for tracker, row in zip(trackers, values, strict=True):
        per_frame = tracker._per_frame
        if len(row) != per_frame or tracker._n_in % per_frame or tracker._space is not space:
            return False
    return True


def _advance_one_frame(trackers: list[BeatTracker], values: list[list[float]]) -> list[list[Beat]]:
    """:func:`advance_trackers` (values checked) when :func:`_one_frame_each`: one pass over the trackers
    before the shared step and one after it, without the general path's rounds of frames; the same
    operations on the same values, so the same bits."""
    members: list[int] = []
    ratios: list[float] = []
    frames: list[tuple[float, int, int]] = []
    for index, (tracker, row) in enumerate(zip(trackers, values, strict=True)):
        # _take_values' path for one whole frame
        activity, per_frame, n_in = tracker._settings.activity, tracker._per_frame, tracker._n_in
        strength = max(row)
        last_active = tracker._last_active
        for at in range(per_frame - 1, -1, -1):
            if row[at] >= activity:
                last_active = tracker._last_active = n_in + at
                break
        tracker._n_in = n_in + per_frame
        silent_for = per_frame - 1 - (last_active - n_in)
        frame = (strength, n_in + row.index(strength), silent_for)
        frames.append(frame)
        ratio = tracker._before_step(frame)
        if ratio is None:
            continue
        members.append(index)
        ratios.append(ratio)
    beats: list[list[Beat]] = [[] for _ in trackers]
    if not members:
        return beats
    group = trackers if len(members) == len(trackers) else [trackers[index] for index in members]
    space = group[0]._space
    bank = _bank_of(space, group)
    rows = [t._row for t in group]
    normalise = [t._row for t in group if not t._step % t._normalise_every]
    interval_list, position_list = space.interval_list, space.position_list
    for index, tracker, slot in zip(members, group, bank.step(rows, ratios, normalise), strict=True):
        interval = interval_list[slot]
        position = (position_list[slot] + tracker._step) % interval
        if position > 1 and position > interval // 10:  # no beat is due (_after_step's first test)
            tracker._best = slot
            continue
        beat = tracker._after_step(slot, frames[index])
        if beat is not None:
            beats[index].append(beat)
    return beats


def _bank_of(space: StateSpace, group: list[BeatTracker]) -> RingBank:
    """The bank whose rows are the group's forward variables: the one they share, or a new one."""
    bank = group[0]._bank
    if bank is not None and all(t._bank is bank for t in group):
        return bank
    alphas = [t._alpha for t in group]
    assert all(alpha is not None for alpha in alphas)
    # Each tracker's _step is already the frame about to be stepped: its alpha is in the layout before it.
    bank = RingBank(space, alphas, [t._step - 1 for t in group])  # type: ignore[arg-type]
    for row, tracker in enumerate(group):
        tracker._bank, tracker._row, tracker._alpha = bank, row, bank.alpha[row]
    return bank
