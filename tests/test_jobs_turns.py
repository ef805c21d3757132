"""A file job's turns (steps in a row per pool call) find what its steps one by one find, and a turn in a
real pool worker ends early once another call waits for that worker."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
from pathlib import Path

import pytest

from server.dsp import DetectorSettings
from server.jobs.result import Found, ResultPieces, result_json, result_text
from server.jobs.work import FileAnalysis, TurnOutcome, analyse_step, analyse_turn
from server.pool import DetectionPool
from server.pool.worker import calls_waiting
from tests.analysis_files import make_file


def by_steps(path: Path, tmp_path: Path, settings: DetectorSettings, step_samples: int) -> tuple[str, Found]:
    """The result text from the steps one by one (as run.py analyze builds it), and what they found."""
    state = FileAnalysis(str(path), str(tmp_path / "steps.spool"), settings, step_samples=step_samples)
    found = Found()
    while not state.finished:
        outcome = analyse_step(pickle.loads(pickle.dumps(state)))
        assert outcome.error is None, outcome.error
        state = outcome.state
        found.add(outcome)
    return result_json(state, found), found


def add(pieces: ResultPieces, outcome: TurnOutcome) -> FileAnalysis:
    assert outcome.error is None, outcome.error
    pieces.add(outcome.onsets_json, outcome.beats_json, outcome.beat_times_s)
    return outcome.state


@pytest.mark.parametrize("fmt", ["wav", "flac", "webm"])
@pytest.mark.parametrize("beats", [True, False])
def test_turns_find_what_the_steps_find(fmt: str, beats: bool, tmp_path: Path) -> None:
    made = make_file(tmp_path, fmt, duration_s=20.0, seed=7)
    settings = DetectorSettings(beats=beats)
    expected, found = by_steps(made.path, tmp_path, settings, step_samples=40_000)
    assert found.onsets and bool(found.beats) is beats
    assert len(found.bands) == (len(found.onsets) if beats else 0)
    assert json.loads(expected)["onsets"][0]["time"] == found.onsets[0][0]

    for turn_s, most_turns in ((0.0, math.inf), (math.inf, 1)):
        state = FileAnalysis(str(made.path), str(tmp_path / f"turns-{turn_s}.spool"), settings,
                             step_samples=40_000)
        pieces = ResultPieces()
        turns = 0
        while not state.finished:
            state = add(pieces, analyse_turn(pickle.loads(pickle.dumps(state)), turn_s))
            turns += 1
        assert result_text(state, pieces) == expected  # byte for byte
        assert not state.unbanded
        assert turns <= most_turns
        if turn_s == 0.0:
            assert turns > 10  # one step per turn (the first only probes)
            assert len(pieces.onsets) > 1


def test_a_failing_step_ends_the_turn_with_its_error(tmp_path: Path) -> None:
    made = make_file(tmp_path, "wav", duration_s=20.0, seed=8)
    data = made.path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # the header declares twice what is there
    outcome = analyse_turn(FileAnalysis(str(cut), str(tmp_path / "cut.spool"), DetectorSettings(),
                                        step_samples=40_000), math.inf)
    assert outcome.error is not None and outcome.error.code == "truncated"
    assert outcome.onsets_json == ""


async def test_a_turn_ends_once_another_call_waits_for_its_worker(tmp_path: Path) -> None:
    assert not calls_waiting()  # outside a pool worker
    made = make_file(tmp_path, "wav", duration_s=60.0, seed=9)
    settings = DetectorSettings()
    expected, _ = by_steps(made.path, tmp_path, settings, step_samples=20_000)

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
        pieces = ResultPieces()
        state = add(pieces, first)
        while not state.finished:
            state = add(pieces, await pool.run_on(0, analyse_turn, state, 60.0))
        assert result_text(state, pieces) == expected
    finally:
        await pool.close()
