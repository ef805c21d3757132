"""The tempo–phase state space of the online beat tracker, and its transitions.

A state is a (tempo, position) pair in the spirit of the bar-pointer model (Whiteley, Cemgil & Godsill 2006)
with the efficient discretisation of Krebs, Böck & Widmer (ISMIR 2015): a tempo is a whole beat interval of
``T`` frames, and it owns exactly ``T`` positions ``0 .. T - 1``, so every state moves on by one position per
frame. Position 0 is the beat. Tempo may change only when a beat interval ends, with a probability that
falls exponentially with the relative change of interval (Böck, Krebs & Widmer, ISMIR 2014's DBN tracker),
weighted by a log-Gaussian tempo prior (Ellis 2007; Davies & Plumbley 2007) that keeps the tracker away from
half and double tempo.

States are flattened tempo by tempo, positions ascending, so "every state moves on by one" is a shift of the
whole array by one place, after which only the first position of each tempo needs the transition matrix.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
    transition : ndarray of float64, shape (n_tempi, n_tempi)
        ``transition[j, k]``: weight of a beat interval of tempo ``j`` being followed by tempo ``k``: the
        probability of that change times the prior of ``k`` to the power ``prior_weight`` (so rows sum to
        at most 1; the forward variable is normalised every frame).
    prior : ndarray of float64, shape (n_states,)
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
    transition: F64
    prior: F64

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
    def phase_of(self) -> F64:
        """Position of each flat state as a fraction of its beat interval, 0–1, shape (n_states,)."""
        phase = self.position_of / self.intervals[self.tempo_of]
        phase.setflags(write=False)
        return phase

    @property
    def bpm(self) -> F64:
        """Tempo of each tempo index, beats per minute, shape (n_tempi,)."""
        return 60.0 * self.fps / self.intervals


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
        Steepness of the tempo-change probability: ``exp(-change_lambda * |T_k / T_j - 1|)``.
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
    ratio = intervals[None, :] / intervals[:, None]
    transition = np.exp(-change_lambda * np.abs(ratio - 1.0))
    transition[transition < 1e-12] = 0.0
    transition /= transition.sum(axis=1, keepdims=True)
    transition = (1.0 - jump) * transition + jump * (weights / weights.sum())[None, :]
    # Every beat at tempo k costs weights[k] ** prior_weight, rows are not normalised again: a tempo twice
    # as fast pays its prior twice as often, which is what keeps eighth notes from passing for beats.
    transition *= weights[None, :] ** prior_weight
    prior = (weights / weights.sum() / intervals)[tempo_of]
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


def forward_step(alpha: F64, space: StateSpace, ratio: float, *, normalise: bool = True) -> int:
    """One frame of the forward filter, in place; return the most likely state.

    Parameters
    ----------
    alpha : ndarray, shape (n_states,), float64
        ``P(state | observations so far)`` at the previous frame, up to a positive factor; overwritten
        with this frame's.
    space : StateSpace
    ratio : float
        Likelihood of this frame's observation in a beat state over that in any other state (> 0). States
        near a beat get its square root.
    normalise : bool
        Scale ``alpha`` to sum 1 (the most likely state does not depend on it; skipping it for a few
        frames saves time, as long as the factor cannot overflow).

    Returns
    -------
    int
        Flat index of the most likely state now.
    """
    ends = alpha[space.last]
    alpha[1:] = alpha[:-1]
    alpha[space.first] = ends @ space.transition
    if ratio != 1.0:
        alpha[space.beat_states] *= ratio
        if len(space.near_states):
            alpha[space.near_states] *= math.sqrt(ratio)
    if normalise:
        alpha *= 1.0 / np.add.reduce(alpha)
    return int(alpha.argmax())


def tempo_marginal(alpha: F64, space: StateSpace) -> F64:
    """Probability of each tempo, shape (n_tempi,): ``alpha`` summed over each tempo's positions."""
    return np.add.reduceat(alpha, space.first)
