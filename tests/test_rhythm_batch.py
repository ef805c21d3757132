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


def test_one_rhythms_fault_fails_only_its_stream() -> None:
    """A rhythm that turns the batch's shared pass down (here its detector hands over a row too few, as a
    bug would) fails its own job, and its stream starts afresh from that job's audio; the other streams of
    the batch lose no frame: their beats and bands stay those of their audio alone."""
    rate, block = 44100, 882
    tracks = [drum_track(beat_times([(bpm, 8.0)]), seed=seed, sample_rate=rate)
              for bpm, seed in ((92, 61), (126, 62), (155, 63))]
    resident = ResidentDetectors()
    keys = ["s0/0", "s1/0", "s2/0"]
    beats: list[list[float]] = [[] for _ in tracks]
    onsets: list[list[tuple[float, str | None]]] = [[] for _ in tracks]
    errors: list[tuple[int, str]] = []
    fault_at = 150  # the job of the 3.0 s mark
    n_jobs = -(-len(tracks[0].audio) // block)
    for k in range(n_jobs):
        if k == fault_at:  # stream 1's next rows come one short
            detector = resident.take(keys[1])
            rhythm = resident.take_rhythm(keys[1])
            assert detector is not None and rhythm is not None
            take_rows = detector.take_rows
            detector.take_rows = lambda take_rows=take_rows: [r[1:] for r in take_rows()]  # type: ignore
            resident.keep(keys[1], detector, rhythm)
        jobs = []
        for i, track in enumerate(tracks):
            start = k * block
            if start >= len(track.audio):
                continue
            retry = k == fault_at + 1 and i == 1  # as the stream's session does after a failure
            if retry:
                keys[1] = "s1/1"
                start = fault_at * block
            fresh = k == 0 or retry
            chunk = track.audio[start : (k + 1) * block]
            offset_s = fault_at * block / rate if i == 1 and k > fault_at else 0.0  # the detector's start
            jobs.append(Job(keys[i], rate, 1, "<f4", DetectorSettings() if fresh else None, chunk.tobytes(),
                            offset_s, fresh=fresh, flush=(k + 1) * block >= len(track.audio)))
        for job, result in zip(jobs, run_batch(jobs, resident=resident), strict=True):
            i = int(job.key[1])
            if not result.ok:
                errors.append((k, i))
                continue
            beats[i] += [time_s for time_s, _, _, _ in result.beats]
            onsets[i] += [(time_s, band) for time_s, _, band in result.onsets]
    assert errors == [(fault_at, 1)]
    for i in (0, 2):
        alone = analyze_rhythm(tracks[i].audio, rate)
        assert beats[i] == pytest.approx([b.time for b in alone.beats], abs=1e-9)
        assert onsets[i] == [(b.onset.time, b.band) for b in alone.onsets]
    late = [t for t in beats[1] if t > fault_at * block / rate + 3.0]  # the fresh rhythm found the beat again
    assert len(late) >= 4


def test_one_frame_per_stream_batches_equal_each_alone() -> None:
    """Streams in 20 ms blocks complete one tracker frame each per batch (the trackers' one-pass path):
    with one stream joining late, one silent past the tracker's reset in the middle (it skips steps while
    the others step) and one at 48 kHz, each stream's beats (time, bpm, confidence, bar position) and
    banded onsets (time, strength, band) are bitwise those of its audio alone."""
    specs = [((118, 10.0), 71, 44100), ((96, 10.0), 72, 44100), ((141, 8.0), 73, 44100),
             ((104, 10.0), 74, 48000)]
    tracks = [drum_track(beat_times([bpm]), seed=seed, sample_rate=rate) for bpm, seed, rate in specs]
    tracks[1].audio[3 * 44100 : 7 * 44100] = 0.0  # digital silence: the tracker forgets its tempo
    joins = [0, 0, 60, 0]  # the job at which each stream starts
    resident = ResidentDetectors()
    beats: list[list[tuple[float, float, float, int | None]]] = [[] for _ in tracks]
    onsets: list[list[tuple[float, float, str | None]]] = [[] for _ in tracks]
    last = max(j + -(-len(t.audio) // (t.sample_rate // 50)) for j, t in zip(joins, tracks, strict=True))
    for k in range(last):
        jobs = []
        for i, track in enumerate(tracks):
            block = track.sample_rate // 50
            start = (k - joins[i]) * block
            if not 0 <= start < len(track.audio):
                continue
            settings = DetectorSettings() if start == 0 else None
            jobs.append(Job(f"s{i}/0", track.sample_rate, 1, "<f4", settings,
                            track.audio[start : start + block].tobytes(), 0.0, fresh=start == 0,
                            flush=start + block >= len(track.audio)))
        for job, result in zip(jobs, run_batch(jobs, resident=resident), strict=True):
            assert result.ok, result.error
            beats[int(job.key[1])] += result.beats
            onsets[int(job.key[1])] += result.onsets
    for i, track in enumerate(tracks):
        alone = analyze_rhythm(track.audio, track.sample_rate)
        assert beats[i] == [(b.time, b.bpm, b.confidence, b.bar_position) for b in alone.beats]
        assert onsets[i] == [(b.onset.time, b.onset.strength, b.band) for b in alone.onsets]
        assert len(beats[i]) >= 8
