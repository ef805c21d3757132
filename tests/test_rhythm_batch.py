"""Rhythm of several live streams in one worker batch (run_batch, as a lane's worker runs it): each stream's
beats and banded onsets are those the rhythm package gives its audio alone, with streams of different
block lengths (so their frames complete in different jobs), ending at different times, and at different
sample rates (so their filterbanks have different bands)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from server.dsp import DetectorSettings
from server.rhythm import analyze_rhythm, lockstep
from server.stream.in_worker import Job, ResidentDetectors, run_batch
from testkit.rhythm_signals import beat_times, drum_track


@pytest.mark.parametrize("rates", [(44100, 44100, 44100), (44100, 48000, 22050)])
def test_streams_in_one_batch_equal_each_alone(rates: tuple[int, int, int]) -> None:
    kits = ((92, 61), (126, 62), (155, 63))
    tracks = [drum_track(beat_times([(bpm, 8.0)]), seed=seed, sample_rate=rate)
              for (bpm, seed), rate in zip(kits, rates, strict=True)]
    blocks = [round(ms * rate / 1000) for ms, rate in zip((20, 14.44, 30), rates, strict=True)]
    resident = ResidentDetectors()
    beats: list[list[tuple[float, int | None]]] = [[] for _ in tracks]
    onsets: list[list[tuple[float, str | None]]] = [[] for _ in tracks]
    starts = [0, 0, 0]
    first = True
    while any(start < len(t.audio) for start, t in zip(starts, tracks, strict=True)):
        jobs = []
        for i, track in enumerate(tracks):
            chunk = track.audio[starts[i] : starts[i] + blocks[i]]
            end = starts[i] + blocks[i] >= len(track.audio)
            if starts[i] >= len(track.audio):
                continue
            jobs.append(Job(f"s{i}/0", rates[i], 1, "<f4", DetectorSettings() if first else None,
                            chunk.tobytes(), 0.0, fresh=first, flush=end))
            starts[i] += blocks[i]
        first = False
        for job, result in zip(jobs, run_batch(jobs, resident=resident), strict=True):
            assert result.ok, result.error
            i = int(job.key[1])
            beats[i] += [(time_s, bar) for time_s, _, _, bar in result.beats]
            onsets[i] += [(time_s, band) for time_s, _, band in result.onsets]
    for i, track in enumerate(tracks):
        alone = analyze_rhythm(track.audio, rates[i])
        assert [t for t, _ in beats[i]] == pytest.approx([b.time for b in alone.beats], abs=1e-9)
        assert [bar for _, bar in beats[i]] == [b.bar_position for b in alone.beats]
        assert len(beats[i]) >= 10
        assert onsets[i] == [(b.onset.time, b.band) for b in alone.onsets]


def test_streams_in_lockstep_equal_each_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams sending one tracker frame per job step as one lockstep (server.rhythm.lockstep; made to
    pay from 2 trackers here): joining one after another, one silent long enough to forget its tempo (the
    lockstep lets go, then takes it back), their tempo asked between jobs, the worker's state pickled
    mid-stream; each one's beats, bar positions and banded onsets are bitwise those of its audio alone."""
    monkeypatch.setattr(lockstep, "MIN_TRACKERS", 2)
    rate, block = 44100, 882  # 20 ms: one 20 ms tracker frame per job
    kits = ((97, 71), (124, 72), (141, 73))
    audio = [drum_track(beat_times([(bpm, 9.0)]), seed=seed).audio for bpm, seed in kits]
    gap = np.zeros(4 * rate, dtype=np.float32)  # over TrackerSettings.reset_s
    audio.append(np.concatenate([audio[1][: 3 * rate], gap, audio[1]]))
    resident = ResidentDetectors()
    beats: list[list[tuple[float, float, float, int | None]]] = [[] for _ in audio]
    onsets: list[list[tuple[float, str | None]]] = [[] for _ in audio]
    stepped_together = 0
    for step in range(max(len(a) // block + 1 + 5 * i for i, a in enumerate(audio))):
        jobs = []
        for i, samples in enumerate(audio):
            k = step - 5 * i  # stream i joins at step 5 i
            if k >= 0 and k * block < len(samples):
                jobs.append(Job(f"s{i}/0", rate, 1, "<f4", DetectorSettings() if k == 0 else None,
                                samples[k * block : (k + 1) * block].tobytes(), 0.0, fresh=k == 0,
                                flush=(k + 1) * block >= len(samples)))
        for job, result in zip(jobs, run_batch(jobs, resident=resident), strict=True):
            assert result.ok, result.error
            i = int(job.key[1])
            beats[i] += result.beats
            onsets[i] += [(time_s, band) for time_s, _, band in result.onsets]
        rhythms = list(resident._rhythms.values())
        stepped_together += any(r._session.tracker._lock is not None for r in rhythms)
        if rhythms and step % 40 == 0:
            rhythms[0].tempo()
        if step == 300:
            resident = pickle.loads(pickle.dumps(resident))
    assert stepped_together > 300
    for i, samples in enumerate(audio):
        alone = analyze_rhythm(samples, rate)
        assert [(t, bpm, c, bar) for t, bpm, c, bar in beats[i]] == [
            (b.time, b.bpm, b.confidence, b.bar_position) for b in alone.beats]
        assert len(beats[i]) >= 10
        assert onsets[i] == [(b.onset.time, b.band) for b in alone.onsets]
