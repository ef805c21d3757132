"""Tempo and confidence of a beat tracker's forward variable at one frame (pure functions).

The tempo is the posterior mean over the tempi within ``TEMPO_WINDOW`` of the most likely state's, beats per
minute; the confidence, 0–1, the product of two probabilities: of those tempi, and of the states whose phase
is within ``PHASE_WINDOW`` of a beat of the most likely state's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from server.rhythm.statespace import StateSpace

F64 = npt.NDArray[np.float64]

PHASE_WINDOW = 0.08  # states within this fraction of a beat of the most likely phase make the confidence


def tempo_summary(space: StateSpace, alpha: F64, best: int, step: int) -> tuple[float, float]:
    """``(bpm, confidence)`` of the forward variable ``alpha`` (ring layout of frame ``step``, shape
    (n_states,), left as it is) whose most likely slot is ``best``."""
    total = float(np.add.reduce(alpha))
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
    drift *= step
    phase += drift
    phase -= np.rint(phase, out=drift)  # np.round to whole numbers
    near = np.abs(phase, out=phase) <= PHASE_WINDOW
    phase_mass = float(np.add.reduce(alpha[near]))
    return bpm, min(1.0, (near_mass / total) * (phase_mass / total))
