"""The tempo–phase state space of the online beat tracker, and its transitions.

A state is a (tempo, position) pair in the spirit of the bar-pointer model (Whiteley, Cemgil & Godsill 2006)
with the efficient discretisation of Krebs, Böck & Widmer (ISMIR 2015): a tempo is a whole beat interval of
``T`` frames, and it owns exactly ``T`` positions ``0 .. T - 1``, so every state moves on by one position per
frame. Position 0 is the beat. Tempo may change only when a beat interval ends, with a probability that
falls exponentially with the relative change of interval (Böck, Krebs & Widmer, ISMIR 2014's DBN tracker;
integrated over the frames of both intervals, :func:`change_probabilities`),
weighted by a log-Gaussian tempo prior (Ellis 2007; Davies & Plumbley 2007) that keeps the tracker away from
half and double tempo.

States are flattened tempo by tempo, each tempo's ``T`` states a ring: at frame ``t`` the state of position
``p`` sits in slot ``first + (p - t) mod T`` of its tempo (:func:`forward_rows`). A state keeps its slot as it
moves on, so a frame moves no memory: the slot that held position ``T - 1`` is overwritten with the new
position 0 (from the transition matrix), and only the slots on and near the beat take the frame's
likelihood. The forward variables of many streams are rows of one array and step together.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

AHEAD_FRAMES = 16  # a one-row RingBank works out its slots for this many frames at a time (kept per stream)
TEMPO_WINDOW = 0.06  # tempi within this relative distance of one another count as the same tempo
SOURCE_POINTS = 256  # change_probabilities integrates over the interval changed from at this many points


@dataclasses.dataclass(frozen=True, eq=False)
class StateSpace:
    """Every (tempo, position) state and what the forward filter needs about them.

    Attributes
    ----------
    fps : float
        Frames per second of the tracker's grid.
    intervals : ndarray of int64, shape (n_tempi,)
        Beat interval of each tempo, frames, ascending (so tempi descending).
    first, last : ndarray of int64, shape (n_tempi,)
        Flat index of each tempo's position 0 and position ``T - 1``.
    tempo_of, position_of : ndarray of int64, shape (n_states,)
        Tempo index and position, frames since the beat, of each flat state.
    beat_states : ndarray of int64
        Flat indices of the states on a beat (position 0).
    near_states : ndarray of int64
        Flat indices of the other states within ``beat_width`` of a beat: they take the square root of a
        frame's likelihood ratio (timing slack that does not punish the silence around a click as hard).
    transition : ndarray of float32, shape (n_tempi, n_tempi)
        ``transition[j, k]``: weight of a beat interval of tempo ``j`` being followed by tempo ``k``: the
        probability of that change times the prior of ``k`` to the power ``prior_weight`` (so rows sum to
        at most 1; the forward variable is normalised every few frames). Float32, like the forward
        variables: a frame's step reads and writes half the bytes of float64.
    prior : ndarray of float32, shape (n_states,)
        Initial distribution: the tempo prior, spread evenly over each tempo's positions; sums to 1.
    """

    fps: float
    intervals: I64
    first: I64
    last: I64
    tempo_of: I64
    position_of: I64
    beat_states: I64
    near_states: I64
    transition: F32
    prior: F32

    @property
    def n_states(self) -> int:
        return len(self.tempo_of)

    @functools.cached_property
    def position_list(self) -> list[int]:
        """:attr:`position_of` as a Python list (indexing it per frame is cheaper than numpy's)."""
        return [int(p) for p in self.position_of]

    @functools.cached_property
    def interval_list(self) -> list[int]:
        """Beat interval of each flat state, frames, as a Python list."""
        return [int(i) for i in self.intervals[self.tempo_of]]

    @functools.cached_property
    def interval_of(self) -> I64:
        """Beat interval of each flat slot's tempo, frames, shape (n_states,)."""
        out = self.intervals[self.tempo_of]
        out.setflags(write=False)
        return out

    @functools.cached_property
    def observed(self) -> tuple[I64, I64, I64]:
        """``(first, position, interval)`` of the states a frame's observation touches: the beat state of
        each tempo (position 0), in tempo order, then the near-beat states (:attr:`near_states`); each with
        its tempo's first slot and interval, for finding its slot at a frame."""
        states = np.concatenate((self.beat_states, self.near_states))
        tempo = self.tempo_of[states]
        out = (self.first[tempo], self.position_of[states], self.intervals[tempo])
        for array in out:
            array.setflags(write=False)
        return out

    @functools.cached_property
    def ahead_constants(self) -> tuple[npt.NDArray[np.signedinteger[Any]], ...]:
        """``(k, interval, first)`` for a one-row :class:`RingBank`'s table of slots ahead: the frames ahead
        ``1 .. AHEAD_FRAMES`` as a column, and the observed states' intervals and first slots
        (:attr:`observed`), all in the table's type: int16 when every slot fits, else int32."""
        kind = np.dtype(np.int16 if self.n_states <= np.iinfo(np.int16).max else np.int32)
        first, _, interval = self.observed
        out: tuple[npt.NDArray[np.signedinteger[Any]], ...] = (
            np.arange(1, AHEAD_FRAMES + 1, dtype=kind)[:, None], interval.astype(kind), first.astype(kind))
        for array in out:
            array.setflags(write=False)
        return out

    @functools.cached_property
    def near_tempi(self) -> npt.NDArray[np.bool_]:
        """``near_tempi[j, k]``: tempo ``k``'s interval is within ``TEMPO_WINDOW`` of tempo ``j``'s."""
        out = np.abs(self.intervals[None, :] / self.intervals[:, None] - 1.0) <= TEMPO_WINDOW
        out.setflags(write=False)
        return out

    @functools.cached_property
    def phase_rates(self) -> tuple[F64, F64]:
        """``(phase0, rate)`` of each slot: the phase (fraction of its beat interval) of the state in it is
        ``phase0 + step * rate`` modulo 1 at frame ``step`` of the ring layout."""
        out = (self.position_of / self.interval_of, 1.0 / self.interval_of)
        for array in out:
            array.setflags(write=False)
        return out

    @functools.cached_property
    def bpm(self) -> F64:
        """Tempo of each tempo index, beats per minute, shape (n_tempi,)."""
        out = 60.0 * self.fps / self.intervals
        out.setflags(write=False)
        return out

    @functools.cached_property
    def bpm_list(self) -> list[float]:
        """:attr:`bpm` as a Python list."""
        return self.bpm.tolist()

    @functools.cached_property
    def tempo_list(self) -> list[int]:
        """:attr:`tempo_of` as a Python list."""
        return self.tempo_of.tolist()

    @functools.cached_property
    def near_tempo_slices(self) -> list[tuple[int, int, I64, F64]]:
        """Per tempo ``j``, where the tempi of :attr:`near_tempi` ``[j]`` (neighbours: one run of indices)
        lie: ``(start, stop, offsets, bpm)``, the flat slots from their first to their last, the start of
        each one's slots from ``start``, and their :attr:`bpm`; so their marginals are
        ``np.add.reduceat(alpha[start:stop], offsets)``, the same sums as :func:`tempo_marginal`'s."""
        out = []
        for near in self.near_tempi:
            tempi = np.flatnonzero(near)
            low, high = int(tempi[0]), int(tempi[-1])
            assert high - low + 1 == len(tempi)
            offsets = self.first[low : high + 1] - self.first[low]
            bpm = self.bpm[near]
            for array in (offsets, bpm):
                array.setflags(write=False)
            out.append((int(self.first[low]), int(self.last[high]) + 1, offsets, bpm))
        return out


def log_gaussian_prior(bpm: F64, centre_bpm: float, octaves: float) -> F64:
    """Log-Gaussian tempo weights: ``exp(-0.5 * (log2(bpm / centre_bpm) / octaves) ** 2)``.

    Parameters
    ----------
    bpm : ndarray
        Tempi, beats per minute.
    centre_bpm : float
        Most likely tempo, beats per minute.
    octaves : float
        Standard deviation, octaves (1 = a factor of two).

    Returns
    -------
    ndarray, same shape, each in (0, 1]
    """
    return np.exp(-0.5 * np.square(np.log2(bpm / centre_bpm) / octaves))


def change_probabilities(intervals: I64, change_lambda: float) -> F64:
    """Weights of a beat interval of tempo ``j`` being followed by one of tempo ``k``, shape (n, n), rows not
    normalised: the density ``exp(-change_lambda * |t / s - 1|)`` of the next interval ``t`` after an
    interval ``s`` (Böck, Krebs & Widmer 2014), integrated over the frame each tempo stands for: ``t`` over
    ``T_k ± 1/2`` exactly, ``s`` evenly over ``T_j ± 1/2`` by the midpoint rule at ``SOURCE_POINTS``
    points (finer than the density's width, ``T_j / change_lambda`` frames).

    The density taken at whole intervals alone (their model, on a 100 fps grid) gives a change of one frame
    the weight ``exp(-change_lambda / T_j)``: at 20 ms frames a 190 BPM beat is 15.8 frames, between 16 and
    15, and 183 BPM 16.4 frames, and the filter can follow them only by stepping between two intervals 6 %
    apart, which that weight (8e-5 at ``change_lambda`` 150) forbids: it slipped to other intervals and to
    half time. A state stands for the tempi of its frame, so a tempo near the edge of one frame may be in
    the next one's after a beat: integrated at both ends, a step of one frame keeps about
    ``T_j / (2 change_lambda)`` of the staying weight (1e-2 at 16 frames and 700), a step of two
    ``exp(-change_lambda / T_j)`` of that, and the weights no longer depend on where the grid's points fall.
    """
    def cdf(u: F64) -> F64:  # of the density over u = t / s - 1 (so over t, times s)
        return np.sign(u) * -np.expm1(-change_lambda * np.abs(u)) / change_lambda

    out = np.zeros((len(intervals), len(intervals)))
    for offset in (np.arange(SOURCE_POINTS) + 0.5) / SOURCE_POINTS - 0.5:  # s: the midpoint rule
        source = intervals[:, None] + offset
        low = (intervals - 0.5)[None, :] / source - 1.0
        high = (intervals + 0.5)[None, :] / source - 1.0
        out += source * (cdf(high) - cdf(low))  # t: exactly
    out /= SOURCE_POINTS
    return out


@functools.lru_cache(maxsize=16)  # shared and read-only, so unpickling a tracker does not rebuild it
def state_space(
    fps: float,
    *,
    min_bpm: float,
    max_bpm: float,
    change_lambda: float,
    prior_bpm: float,
    prior_octaves: float,
    prior_weight: float,
    beat_width: float,
    jump: float,
) -> StateSpace:
    """Build the state space for a frame rate and a tempo range.

    Parameters
    ----------
    fps : float
        Frames per second.
    min_bpm, max_bpm : float
        Tempo range, beats per minute.
    change_lambda : float
        Steepness of the tempo-change density ``exp(-change_lambda * |t / T_j - 1|)`` (see
        :func:`change_probabilities`).
    prior_bpm, prior_octaves : float
        Centre (BPM) and width (octaves) of the log-Gaussian tempo prior.
    prior_weight : float
        Exponent of the prior paid at every beat, 0 (none) upwards.
    beat_width : float
        Fraction of a beat interval, centred on the beat, whose states explain an onset (at least the
        beat's own position).
    jump : float
        Weight of a jump to any tempo (by the prior) at a beat, beside the local change: the way to a new
        tempo far from the old one.

    Returns
    -------
    StateSpace
    """
    low = max(1, int(np.floor(60.0 * fps / max_bpm)))
    high = int(np.ceil(60.0 * fps / min_bpm))
    intervals = np.arange(low, high + 1, dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(intervals)[:-1])).astype(np.int64)
    last = first + intervals - 1
    tempo_of = np.repeat(np.arange(len(intervals), dtype=np.int64), intervals)
    position_of = np.arange(int(intervals.sum()), dtype=np.int64) - first[tempo_of]
    half = np.maximum(0.5, 0.5 * beat_width * intervals)[tempo_of]
    distance = np.minimum(position_of, intervals[tempo_of] - position_of)
    beat_states = np.flatnonzero(position_of == 0).astype(np.int64)
    near_states = np.flatnonzero((distance < half) & (position_of != 0)).astype(np.int64)
    bpm = 60.0 * fps / intervals
    weights = log_gaussian_prior(bpm, prior_bpm, prior_octaves)
    transition = change_probabilities(intervals, change_lambda)
    transition[transition < 1e-12] = 0.0
    transition /= transition.sum(axis=1, keepdims=True)
    transition = (1.0 - jump) * transition + jump * (weights / weights.sum())[None, :]
    # Every beat at tempo k costs weights[k] ** prior_weight, rows are not normalised again: a tempo twice
    # as fast pays its prior twice as often, which is what keeps eighth notes from passing for beats.
    transition *= weights[None, :] ** prior_weight
    prior = (weights / weights.sum() / intervals)[tempo_of].astype(np.float32)
    transition = transition.astype(np.float32)
    space = StateSpace(
        fps=fps,
        intervals=intervals,
        first=first,
        last=last,
        tempo_of=tempo_of,
        position_of=position_of,
        beat_states=beat_states,
        near_states=near_states,
        transition=transition,
        prior=prior,
    )
    for array in (intervals, first, last, tempo_of, position_of, beat_states, near_states, transition, prior):
        array.setflags(write=False)
    return space


class RingBank:
    """The forward variables of several streams, rows of one array, and the slots a frame observes in each.

    Parameters
    ----------
    space : StateSpace
    alphas : list of ndarray, shape (n_states,), float32 (others are converted)
        Each stream's forward variable, in the ring layout of frame ``steps[i]``.
    steps : list of int
        The frame of each one's layout.

    Attributes
    ----------
    alpha : ndarray, shape (n_rows, n_states), float32
    slots : ndarray, shape (n_rows, n_observed), int64
        Flat index (into ``alpha``) of each observed state (:attr:`StateSpace.observed`) of each row at its
        current frame; each frame moves them one slot back around their ring. (A bank of one row reads its
        slots from a table of the next ``AHEAD_FRAMES`` frames' instead, and leaves these as they were.)
    """

    def __init__(self, space: StateSpace, alphas: list[F32], steps: list[int]) -> None:
        self.space = space
        self.alpha = np.stack(alphas, dtype=np.float32)
        first, position, interval = space.observed
        self._floor = first + np.arange(len(alphas), dtype=np.int64)[:, None] * space.n_states
        self.slots = (position - np.array(steps, dtype=np.int64)[:, None]) % interval + self._floor
        self._ahead = self.slots[:0]  # one row: the slots of its next frames, one row per frame
        self._ahead_at = 0  # row of _ahead for the next frame
        self._stepped = 0  # frames stepped by _step_one

    def step(self, rows: list[int], ratios: list[float], normalise: list[int]) -> list[int]:
        """One frame of the forward filter for ``rows``, each once, in place; the most likely slot of each.

        Each row's values do not depend on which other rows step with it (the transition is one small
        product per row, reductions run along each row), so a stream's beats are the same alone or in a
        batch.

        Parameters
        ----------
        rows : list of int
        ratios : list of float
            Likelihood of each row's observation in a beat state over that in any other state (> 0), taken
            as float32. States near a beat get its square root (float32's).
        normalise : list of int
            The rows to scale to sum 1 (the most likely state does not depend on it; skipping it for a few
            frames saves time, as long as the factor cannot overflow).

        Returns
        -------
        list of int
            Slot of the most likely state of each row, in the order of ``rows``.
        """
        space, alpha = self.space, self.alpha
        interval = space.observed[2]
        if len(alpha) == 1 and rows == [0]:
            return [self._step_one(ratios[0], bool(normalise))]
        every = len(rows) == len(alpha) and rows == list(range(len(rows)))
        if every:
            slots = self.slots
            slots -= 1
            np.add(slots, interval, out=slots, where=slots < self._floor)
        else:
            slots = self.slots[rows] - 1
            np.add(slots, interval, out=slots, where=slots < self._floor[rows])
            self.slots[rows] = slots
        # The beat slots held position T - 1 until now: they take the transition from it.
        flat = alpha.reshape(-1)
        values = flat[slots]
        beats = len(space.intervals)
        ratio = np.array(ratios, dtype=np.float32)[:, None]
        moved = np.matmul(values[:, None, :beats], space.transition)[:, 0, :]
        values *= np.sqrt(ratio)  # the near-beat slots (contiguous: cheaper than their columns alone)
        np.multiply(moved, ratio, out=values[:, :beats])  # the beat slots: overwritten
        flat[slots] = values
        if len(normalise) == len(alpha):  # every row (in order: each row is listed once)
            alpha *= (1.0 / np.add.reduce(alpha, axis=1))[:, None]
        elif normalise:
            alpha[normalise] *= (1.0 / np.add.reduce(alpha[normalise], axis=1))[:, None]
        best: list[int] = (alpha if every else alpha[rows]).argmax(axis=1).tolist()
        return best

    def _slots_ahead(self) -> npt.NDArray[np.signedinteger[Any]]:
        """The one row's slots at each of the next ``AHEAD_FRAMES`` frames: at frame ``stepped + k``, each
        observed state's ``(slot - floor - stepped - k) % interval + floor``, worked out as
        ``((slot - floor - stepped) % interval - k) % interval + floor`` (the same integers), so the table
        is written in place into the one it replaces, in int16 when every slot fits (1462 states at the
        defaults), else int32. It is kept per stream: ~130 KiB of int64 tables and temporaries at first,
        faulted in again at each recomputation after a heap trim; then 22 KiB in int32 for 32 frames; now
        5.5 KiB (bench/README.md, "Memory per stream"). A frame converts its row to numpy's index type
        (:meth:`_step_one`), which indexes ~3x faster than a table of a narrower type."""
        first, interval = self._floor[0], self.space.observed[2]
        ring = (self.slots[0] - first - self._stepped) % interval  # one row: the frame count mod interval
        steps, narrow_interval, narrow_first = self.space.ahead_constants
        ahead = self._ahead
        if ahead.dtype != steps.dtype or ahead.shape != (AHEAD_FRAMES, len(ring)):
            ahead = np.empty((AHEAD_FRAMES, len(ring)), steps.dtype)
        np.subtract(ring.astype(steps.dtype), steps, out=ahead)
        np.remainder(ahead, narrow_interval, out=ahead)
        np.add(ahead, narrow_first, out=ahead)
        return ahead

    def _step_one(self, ratio: float, normalise: bool) -> int:
        """:meth:`step` of a bank of one row (a stream alone: numpy's cost per call is most of it there),
        in fewer and one-dimensional calls: the same operations on the same values, so the same bits (the
        transition is the same vector-matrix product, one row of the stacked one). The slots come from a
        table worked out for ``AHEAD_FRAMES`` frames at a time (integers: the same ones)."""
        space, row = self.space, self.alpha[0]
        at = self._ahead_at
        if at == len(self._ahead):
            self._ahead = self._slots_ahead()
            at = 0
        slots = self._ahead[at].astype(np.intp)
        self._ahead_at = at + 1
        self._stepped += 1
        values = row[slots]
        beats = len(space.intervals)
        moved = values[:beats].dot(space.transition)
        ratio32 = np.float32(ratio)  # (as the batch's array of ratios has it, and its square root)
        values *= np.sqrt(ratio32)
        np.multiply(moved, ratio32, out=values[:beats])
        row[slots] = values
        if normalise:
            row *= 1.0 / np.add.reduce(row)
        return int(row.argmax())


def tempo_marginal(alpha: F64, space: StateSpace) -> F64:
    """Probability of each tempo, shape (n_tempi,): ``alpha`` summed over each tempo's slots."""
    return np.add.reduceat(alpha, space.first)
