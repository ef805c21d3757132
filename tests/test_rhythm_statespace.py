"""The forward filter's ring bank: a stream alone (a bank of one row, its own one-dimensional path and a
table of its slots worked out ``AHEAD_FRAMES`` frames at a time) steps bit for bit as the same stream in a
bank of several rows (the stacked path), frame after frame."""

from __future__ import annotations

import numpy as np
import pytest

from server.rhythm.settings import TrackerSettings
from server.rhythm.statespace import AHEAD_FRAMES, RingBank, change_probabilities
from server.rhythm.tracker import NORMALISE_FRAMES, space_for

# The defaults (1462 states: the one-row table in int16), and a range of 43,380 states (int32).
WIDE = TrackerSettings(frame_s=0.005, min_bpm=40.0, max_bpm=200.0)


@pytest.mark.parametrize(("seed", "settings", "table"), [
    (1, TrackerSettings(), np.int16), (2, TrackerSettings(), np.int16), (3, TrackerSettings(), np.int16),
    (4, WIDE, np.int32)])
def test_a_bank_of_one_row_steps_as_a_row_of_many(seed: int, settings: TrackerSettings, table: type) -> None:
    space = space_for(settings)
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
    assert alone._ahead.dtype == table and alone._ahead.shape == (AHEAD_FRAMES, len(space.observed[0]))
    assert len(set(bests)) > 10  # the most likely state moved: the test saw the filter work


def test_change_probabilities_are_the_density_over_both_intervals_frames() -> None:
    intervals = np.arange(13, 56, dtype=np.int64)
    weights = change_probabilities(intervals, 700.0)
    # Against the density exp(-700 |t / s - 1|) integrated numerically over t in T_k +- 1/2 and s in
    # T_j +- 1/2 (the first at a fine step, the second at 400 points).
    for j in (0, 3, 14, 42):
        t = np.linspace(intervals[0] - 0.5, intervals[-1] + 0.5, 200_001)
        cells = np.clip(np.round(t).astype(np.int64) - intervals[0], 0, len(intervals) - 1)
        numeric = np.zeros(len(intervals))
        for source in intervals[j] + (np.arange(400) + 0.5) / 400 - 0.5:
            density = np.exp(-700.0 * np.abs(t / source - 1.0))
            numeric += np.bincount(cells, weights=density, minlength=len(intervals)) * (t[1] - t[0]) / 400
        near = np.abs(intervals - intervals[j]) <= 2  # (further on, both are under 1e-12 of the row)
        assert weights[j][near] == pytest.approx(numeric[near], rel=0.01)
        assert np.all(weights[j][~near] < 1e-12 * weights[j, j])
    # A 183 BPM beat at 20 ms frames is 16.4 frames: the filter must step between 16 and 17. A step of
    # one frame there keeps about 16 / (2 * 700) of the staying weight; the density at the neighbour alone
    # would give it exp(-700 / 16), nothing.
    row = weights[16 - 13]
    assert 0.5 * 16 / 1400 < row[17 - 13] / row[16 - 13] < 2 * 16 / 1400
    assert row[15 - 13] / row[16 - 13] > 0.5 * 16 / 1400
    assert row[18 - 13] / row[16 - 13] < 1e-3 * row[17 - 13] / row[16 - 13]  # two frames: a real change
