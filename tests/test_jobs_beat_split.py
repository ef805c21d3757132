"""A file job's rhythm run beside its detector (``split_beats``, :mod:`server.jobs.beat_work`) gives the
result of one worker doing both, byte for byte; a rhythm turn in a real worker ends once another call waits;
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
from server.jobs import runner as runner_module
from server.jobs.beat_work import rhythm_turn
from server.jobs.result import ResultPieces, result_text
from server.jobs.work import FileAnalysis, TurnOutcome, analyse_turn
from server.pool import DetectionPool
from server.rhythm import RhythmSession
from testkit.rhythm_signals import beat_times, drum_track
from tests.analysis_files import post_file, wait_finished
from tests.conftest import StartServer


def generated(tmp_path: Path) -> Path:
    """40 s of a drum kit speeding up from 104 to 132 BPM, then 4 s of silence and 8 s at 90 BPM."""
    track = drum_track(beat_times([(104.0, 20.0), (132.0, 20.0)]), seed=41)
    later = drum_track(beat_times([(90.0, 8.0)]), seed=42)
    audio = np.concatenate([track.audio, np.zeros(4 * track.sample_rate, np.float32), later.audio])
    path = tmp_path / "kit.wav"
    sf.write(path, audio, track.sample_rate, subtype="PCM_16")
    return path


def analysed(path: Path, tmp_path: Path, *, split: bool, turn_s: float = math.inf,
             rhythm_blocks: int | None = None) -> str:
    """The result text of ``path`` through turns (each state pickled, as between pool calls); with
    ``split``, its rhythm fed in turns of their own, ``rhythm_blocks`` blocks at a time (None: all)."""
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
            assert not outcome.blocks and outcome.beat_side is None
            continue
        assert not outcome.onsets_json and not outcome.beats_json and side is not None
        odf, rows, blocks = outcome.odf, outcome.rows, outcome.blocks
        assert odf is not None and sum(frames for frames, _ in blocks) == len(odf)
        assert rows is None or rows.shape[0] == len(odf)
        while blocks:
            some = blocks if rhythm_blocks is None else blocks[:rhythm_blocks]
            fed = rhythm_turn(pickle.loads(pickle.dumps(side)), odf, rows, some,
                              outcome.final and len(some) == len(blocks))
            assert fed.error is None, fed.trace
            side = fed.session
            pieces.add(fed.onsets_json, fed.beats_json, fed.beat_times_s)
            odf, blocks = odf[fed.frames_used :], blocks[fed.blocks_used :]
            rows = None if rows is None else rows[fed.frames_used :]
    return result_text(state, pieces)


def test_split_beats_give_the_single_worker_result(tmp_path: Path) -> None:
    # (The same held on the 7 real kits of ../shared/data/rhythm-dev, checked by hand: bench/README.md. The
    # suite reads no shared data, so that it runs alike everywhere.)
    path = generated(tmp_path)
    expected = analysed(path, tmp_path, split=False)
    assert '"bar_position"' in expected and '"band":"low"' in expected  # beats, meter and bands in it
    assert analysed(path, tmp_path, split=True) == expected  # byte for byte
    # turns of one step each, the rhythm fed a block at a time: still the same
    assert analysed(path, tmp_path, split=True, turn_s=0.0, rhythm_blocks=1) == expected
    assert analysed(path, tmp_path, split=False, turn_s=0.0) == expected


def test_a_rhythm_turn_reports_blocks_without_their_rows_as_an_error(tmp_path: Path) -> None:
    state = FileAnalysis(str(generated(tmp_path)), str(tmp_path / "x.spool"), DetectorSettings(),
                         split_beats=True)
    side = analyse_turn(state, 0.0).beat_side
    assert side is not None
    outcome = rhythm_turn(side, np.ones(10, dtype=np.float32), np.ones((5, 141), dtype=np.float32),
                          [(10, [])], False)
    assert outcome.error is not None and outcome.error.code == "internal" and outcome.blocks_used == 0
    assert "filterbank rows" in outcome.error.message


async def test_a_rhythm_turn_ends_once_another_call_waits_for_its_worker(tmp_path: Path) -> None:
    state = FileAnalysis(str(generated(tmp_path)), str(tmp_path / "x.spool"), DetectorSettings(),
                         split_beats=True, step_samples=20_000)
    outcome = analyse_turn(state, math.inf)
    side, odf, rows, blocks = outcome.beat_side, outcome.odf, outcome.rows, outcome.blocks
    assert side is not None and odf is not None and len(blocks) > 50 and outcome.final
    alone = rhythm_turn(pickle.loads(pickle.dumps(side)), odf, rows, blocks, True, math.inf)
    assert alone.blocks_used == len(blocks)

    pool = DetectionPool(1)
    await pool.start()
    try:
        turn = asyncio.ensure_future(pool.run_on(0, rhythm_turn, side, odf, rows, blocks, True, 60.0))
        await asyncio.sleep(0)  # the turn's call is written first
        pid = await pool.run_on(0, os.getpid)
        first = await turn
        assert pid == pool.worker_pids(0)[0]
        assert first.error is None and 0 < first.blocks_used < len(blocks)  # it ended for the call
        assert rows is not None
        rest = await pool.run_on(0, rhythm_turn, first.session, odf[first.frames_used :],
                                 rows[first.frames_used :], blocks[first.blocks_used :], True, 60.0)
        assert rest.blocks_used == len(blocks) - first.blocks_used
        assert first.beat_times_s + rest.beat_times_s == alone.beat_times_s
        assert ",".join(filter(None, (first.onsets_json, rest.onsets_json))) == alone.onsets_json
    finally:
        await pool.close()


@pytest.mark.parametrize("backlog_frames", [runner_module.MAX_BACKLOG_FRAMES, 0])
async def test_two_workers_and_one_give_the_same_result(backlog_frames: int, start_server: StartServer,
                                                        http: aiohttp.ClientSession, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # 0: the detector waits after each turn until the rhythm has taken in every frame handed over
    monkeypatch.setattr(runner_module, "MAX_BACKLOG_FRAMES", backlog_frames)
    path = generated(tmp_path)
    results = []
    for workers in (2, 1):  # the rhythm beside the detector, then one worker doing both
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


async def test_a_rhythm_error_is_known_before_the_detector_ends(tmp_path: Path) -> None:
    """The job's runner asks its BeatChain after every detector turn: a rhythm turn that failed in its
    worker is reported then (and ends the job), not only once the detector has gone through the file."""
    state = FileAnalysis(str(generated(tmp_path)), str(tmp_path / "x.spool"), DetectorSettings(),
                         split_beats=True)
    first = analyse_turn(state, 0.0)
    assert first.beat_side is not None
    pool = DetectionPool(2)
    await pool.start()
    chain = runner_module.BeatChain(pool, asyncio.Semaphore(1), first.beat_side, ResultPieces())
    try:
        assert chain.check() is None
        broken = TurnOutcome(first.state, odf=np.ones(10, dtype=np.float32), rows=None, blocks=[(10, [])])
        chain.feed(broken)  # frames without their filterbank rows, as a bug would hand over
        await asyncio.wait_for(chain.drained_to(-1), 60)  # returns once the chain has ended
        error = chain.check()
        assert error is not None and error.code == "internal" and "rhythm" in error.message
    finally:
        await chain.stop()
        await pool.close()
