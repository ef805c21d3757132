"""The forward filter's ring bank: a stream alone (a bank of one row, its own one-dimensional path and a
table of its slots worked out ``AHEAD_FRAMES`` frames at a time) steps bit for bit as the same stream in a
bank of several rows (the stacked path), frame after frame."""

from __future__ import annotations

import numpy as np
import pytest

from server.rhythm.settings import TrackerSettings
from server.rhythm.statespace import AHEAD_FRAMES, RingBank
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
