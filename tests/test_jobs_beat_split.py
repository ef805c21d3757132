"""A file job's beats tracked beside its detector (``split_beats``, :mod:`server.jobs.beat_work`) give the
result of one worker doing both, byte for byte; a beat turn in a real worker ends once another call waits;
a server with two workers (split) and one with one (not split) answer the same."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from server.appkeys import JOBS
from server.dsp import DetectorSettings
from server.jobs.beat_work import track_turn
from server.jobs.result import ResultPieces, result_text
from server.jobs.work import FileAnalysis, analyse_turn
from server.pool import DetectionPool
from server.rhythm import RhythmSession
from testkit.rhythm_signals import beat_times, drum_track
from tests.analysis_files import post_file, wait_finished
from tests.conftest import StartServer

REPO = Path(__file__).resolve().parent.parent
# Real drum recordings, read in place (never copied): where the shared data is (``$TRANSIENT_RHYTHM_DEV``,
# or ../shared/data/rhythm-dev beside the checkout or beside its worktree folder), two of them go in too.
_PLACES = [os.environ.get("TRANSIENT_RHYTHM_DEV", ""),
           *(str(up / "shared" / "data" / "rhythm-dev") for up in (REPO.parent, REPO.parent.parent))]
RHYTHM_DEV = next((Path(place) for place in _PLACES if place and Path(place).is_dir()), None)
REAL = sorted(RHYTHM_DEV.glob("*.wav"))[:2] if RHYTHM_DEV is not None else []


def generated(tmp_path: Path) -> Path:
    """40 s of a drum kit speeding up from 104 to 132 BPM, then 4 s of silence and 8 s at 90 BPM."""
    track = drum_track(beat_times([(104.0, 20.0), (132.0, 20.0)]), seed=41)
    later = drum_track(beat_times([(90.0, 8.0)]), seed=42)
    audio = np.concatenate([track.audio, np.zeros(4 * track.sample_rate, np.float32), later.audio])
    path = tmp_path / "kit.wav"
    sf.write(path, audio, track.sample_rate, subtype="PCM_16")
    return path


def analysed(path: Path, tmp_path: Path, *, split: bool, turn_s: float = math.inf,
             track_frames: int | None = None) -> str:
    """The result text of ``path`` through turns (each state pickled, as between pool calls); with
    ``split``, its beats tracked in turns of their own, ``track_frames`` frames at a time (None: all)."""
    state = FileAnalysis(str(path), str(tmp_path / f"{split}-{turn_s}.spool"), DetectorSettings(),
                         split_beats=split)
    pieces = ResultPieces()
    side: RhythmSession | None = None
    while not state.finished:
        outcome = analyse_turn(pickle.loads(pickle.dumps(state)), turn_s)
        assert outcome.error is None, outcome.error
        state = outcome.state
        pieces.add(outcome.onsets_json, outcome.beats_json, outcome.beat_times_s)
        side = outcome.beat_side or side
        if not split:
            assert outcome.strengths is None and outcome.beat_side is None
            continue
        assert not outcome.beats_json and side is not None
        strengths, sums = outcome.strengths, outcome.sums
        assert strengths is not None and sums is not None and len(sums) == 3 * len(strengths)
        while len(strengths):
            size = len(strengths) if track_frames is None else track_frames
            beat = track_turn(pickle.loads(pickle.dumps(side)), strengths[:size], sums[: 3 * size])
            assert beat.error is None, beat.trace
            side = beat.session
            pieces.add("", beat.beats_json, beat.beat_times_s)
            strengths, sums = strengths[beat.frames_used :], sums[3 * beat.frames_used :]
    return result_text(state, pieces)


@pytest.mark.parametrize("name", ["generated", *(path.name for path in REAL)])
def test_split_beats_give_the_single_worker_result(name: str, tmp_path: Path) -> None:
    path = generated(tmp_path) if RHYTHM_DEV is None or name == "generated" else RHYTHM_DEV / name
    expected = analysed(path, tmp_path, split=False)
    assert '"bar_position"' in expected and '"band":"low"' in expected  # beats, meter and bands in it
    assert analysed(path, tmp_path, split=True) == expected  # byte for byte
    # turns of one step each, beats tracked in odd pieces: still the same
    assert analysed(path, tmp_path, split=True, turn_s=0.0, track_frames=333) == expected
    assert analysed(path, tmp_path, split=False, turn_s=0.0) == expected


def test_a_beat_turn_refuses_sums_that_do_not_match(tmp_path: Path) -> None:
    state = FileAnalysis(str(generated(tmp_path)), str(tmp_path / "x.spool"), DetectorSettings(),
                         split_beats=True)
    first = analyse_turn(state, 0.0)
    assert first.beat_side is not None
    outcome = track_turn(first.beat_side, np.ones(10), np.ones(20, dtype=np.float32))
    assert outcome.error is not None and outcome.error.code == "internal" and outcome.frames_used == 0
    assert "three per frame" in outcome.error.message


async def test_a_beat_turn_ends_once_another_call_waits_for_its_worker(tmp_path: Path) -> None:
    state = FileAnalysis(str(generated(tmp_path)), str(tmp_path / "x.spool"), DetectorSettings(),
                         split_beats=True)
    outcome = analyse_turn(state, math.inf)
    side, strengths, sums = outcome.beat_side, outcome.strengths, outcome.sums
    assert side is not None and strengths is not None and sums is not None and len(strengths) > 2000
    alone = track_turn(pickle.loads(pickle.dumps(side)), strengths, sums, math.inf)
    assert alone.frames_used == len(strengths)

    pool = DetectionPool(1)
    await pool.start()
    try:
        turn = asyncio.ensure_future(pool.run_on(0, track_turn, side, strengths, sums, 60.0))
        await asyncio.sleep(0)  # the turn's call is written first
        pid = await pool.run_on(0, os.getpid)
        first = await turn
        assert pid == pool.worker_pids(0)[0]
        assert first.error is None and 0 < first.frames_used < len(strengths)  # it ended for the call
        rest = await pool.run_on(0, track_turn, first.session, strengths[first.frames_used :],
                                 sums[3 * first.frames_used :], 60.0)
        assert rest.frames_used == len(strengths) - first.frames_used
        assert first.beat_times_s + rest.beat_times_s == alone.beat_times_s
    finally:
        await pool.close()


async def test_two_workers_and_one_give_the_same_result(start_server: StartServer,
                                                        http: aiohttp.ClientSession, tmp_path: Path) -> None:
    path = generated(tmp_path)
    results = []
    for workers in (2, 1):  # split beats, then one worker doing both
        server = await start_server(workers=workers)
        url = str(server.make_url("")).rstrip("/")
        runner = server.app[JOBS].runner
        assert runner is not None and runner.split_beats is (workers == 2)
        status, body = await post_file(http, url, path, filename=path.name)
        assert status == 202
        done = await wait_finished(http, url, body["task_id"])
        assert done["status"] == "success", done
        results.append(done["result"])
    split, single = results
    assert split["beats"] and split["tempo_bpm"] is not None
    assert split == single
