"""A file job's turns (steps in a row per pool call) find what its steps one by one find, and a turn in a
real pool worker ends early once another call waits for that worker."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
from pathlib import Path

import pytest

from server.dsp import DetectorSettings
from server.jobs.work import FileAnalysis, StepOutcome, analyse_step, analyse_turn
from server.pool import DetectionPool
from server.pool.worker import calls_waiting
from tests.analysis_files import make_file

Findings = tuple[list[tuple[float, float]], list[tuple[float, int | None]], list[str]]


def by_steps(path: Path, tmp_path: Path, settings: DetectorSettings, step_samples: int) -> Findings:
    state = FileAnalysis(str(path), str(tmp_path / "steps.spool"), settings, step_samples=step_samples)
    found: Findings = ([], [], [])
    while not state.finished:
        outcome = analyse_step(pickle.loads(pickle.dumps(state)))
        assert outcome.error is None, outcome.error
        state = outcome.state
        found[0].extend(outcome.onsets)
        found[1].extend(outcome.beats)
        found[2].extend(outcome.bands)
    return found


def add(found: Findings, outcome: StepOutcome) -> None:
    assert outcome.error is None, outcome.error
    found[0].extend(outcome.onsets)
    found[1].extend(outcome.beats)
    found[2].extend(outcome.bands)


@pytest.mark.parametrize("fmt", ["wav", "flac", "webm"])
@pytest.mark.parametrize("beats", [True, False])
def test_turns_find_what_the_steps_find(fmt: str, beats: bool, tmp_path: Path) -> None:
    made = make_file(tmp_path, fmt, duration_s=20.0, seed=7)
    settings = DetectorSettings(beats=beats)
    expected = by_steps(made.path, tmp_path, settings, step_samples=40_000)
    assert expected[0] and bool(expected[1]) is beats
    assert len(expected[2]) == (len(expected[0]) if beats else 0)

    for turn_s, most_turns in ((0.0, math.inf), (math.inf, 1)):
        state = FileAnalysis(str(made.path), str(tmp_path / f"turns-{turn_s}.spool"), settings,
                             step_samples=40_000)
        found: Findings = ([], [], [])
        turns = 0
        while not state.finished:
            outcome = analyse_turn(pickle.loads(pickle.dumps(state)), turn_s)
            add(found, outcome)
            state = outcome.state
            turns += 1
        assert found == expected
        assert turns <= most_turns
        if turn_s == 0.0:
            assert turns > 10  # one step per turn (the first only probes)


async def test_a_turn_ends_once_another_call_waits_for_its_worker(tmp_path: Path) -> None:
    assert not calls_waiting()  # outside a pool worker
    made = make_file(tmp_path, "wav", duration_s=60.0, seed=9)
    settings = DetectorSettings()
    expected = by_steps(made.path, tmp_path, settings, step_samples=20_000)

    def fresh(name: str) -> FileAnalysis:
        return FileAnalysis(str(made.path), str(tmp_path / name), settings, step_samples=20_000)

    pool = DetectionPool(1)
    await pool.start()
    try:
        alone = await pool.run_on(0, analyse_turn, fresh("alone.spool"), 60.0)
        assert alone.error is None and alone.state.finished  # nothing waited: the whole file in one turn

        turn = asyncio.ensure_future(pool.run_on(0, analyse_turn, fresh("shared.spool"), 60.0))
        await asyncio.sleep(0)  # the turn's call is written first
        pid = await pool.run_on(0, os.getpid)
        first = await turn
        assert pid == pool.worker_pids(0)[0]
        assert first.error is None and not first.state.finished  # it ended for the waiting call
        found: Findings = ([], [], [])
        add(found, first)
        state = first.state
        while not state.finished:
            outcome = await pool.run_on(0, analyse_turn, state, 60.0)
            add(found, outcome)
            state = outcome.state
        assert found == expected
    finally:
        await pool.close()
