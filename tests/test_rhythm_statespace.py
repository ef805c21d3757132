"""The forward filter's ring bank: a stream alone (a bank of one row, its own one-dimensional path and a
table of its slots worked out ``AHEAD_FRAMES`` frames at a time) steps bit for bit as the same stream in a
bank of several rows (the stacked path), frame after frame."""

from __future__ import annotations

import numpy as np
import pytest

from server.rhythm.settings import TrackerSettings
from server.rhythm.statespace import AHEAD_FRAMES, RingBank, change_probabilities
from server.rhythm.tracker import NORMALISE_FRAMES, space_for


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bank_of_one_row_steps_as_a_row_of_many(seed: int) -> None:
    space = space_for(TrackerSettings())
    rng = np.random.default_rng(seed)
    start_step = int(rng.integers(0, 1000))
    alphas = [space.prior * rng.uniform(0.5, 1.5, space.n_states) for _ in range(3)]
    alone = RingBank(space, [alphas[1].copy()], [start_step])
    together = RingBank(space, [a.copy() for a in alphas], [start_step + 7, start_step, start_step - 3])
    frames = 5 * AHEAD_FRAMES + 3  # the one-row table is worked out again five times
    bests = []
    for frame in range(frames):
        ratios = rng.uniform(0.01, 40.0, 3).tolist()
        normalise = [0, 1, 2] if not frame % NORMALISE_FRAMES else []
        best_alone = alone.step([0], [ratios[1]], [0] if normalise else [])
        best_together = together.step([0, 1, 2], ratios, normalise)
        assert best_alone == [best_together[1]]
        bests.append(best_alone[0])
        assert np.array_equal(alone.alpha[0], together.alpha[1])
    assert len(set(bests)) > 10  # the most likely state moved: the test saw the filter work


def test_change_probabilities_are_the_density_over_each_interval_s_frame() -> None:
    intervals = np.arange(13, 56, dtype=np.int64)
    weights = change_probabilities(intervals, 250.0)
    # Against the density exp(-250 |t / T_j - 1|) integrated numerically over T_k +- 1/2.
    for j in (0, 3, 14, 42):
        t = np.linspace(intervals[0] - 0.5, intervals[-1] + 0.5, 400_001)
        density = np.exp(-250.0 * np.abs(t / intervals[j] - 1.0))
        cells = np.clip(np.round(t).astype(np.int64) - intervals[0], 0, len(intervals) - 1)
        numeric = np.bincount(cells, weights=density, minlength=len(intervals)) * (t[1] - t[0])
        assert weights[j] * intervals[j] == pytest.approx(numeric, rel=2e-3, abs=1e-12)  # (per unit of u)
    # A 190 BPM beat at 20 ms frames is 15.8 frames: the filter must step between 16 and 15. A frame's
    # step there keeps about exp(-250 / 32) / 2 of the staying weight (the density at the neighbour alone,
    # exp(-250 / 16), would be 30 times less).
    row = weights[16 - 13]
    assert 1e-4 < row[15 - 13] / row[16 - 13] < 1e-3
    assert row[15 - 13] / row[16 - 13] > 30 * np.exp(-250.0 / 16)
