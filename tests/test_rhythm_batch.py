"""Rhythm of several live streams in one worker batch (run_batch, as a lane's worker runs it): each stream's
beats and banded onsets are those the rhythm package gives its audio alone, with streams of different
block lengths (so their frames complete in different jobs), ending at different times, and at different
sample rates (so their filterbanks have different bands)."""

from __future__ import annotations

import pytest

from server.dsp import DetectorSettings
from server.rhythm import analyze_rhythm
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
