"""Metrical level: the tracker locked to eighth notes (the double-time trap) reports every second beat at
half the tempo; music whose every beat carries a kick or a snare keeps every beat. Known accent sequences,
then generated drum tracks through the whole rhythm session, whose beats are known."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from server.dsp import OnsetDetector
from server.rhythm import RhythmSession, analyze_rhythm
from server.rhythm.level import MIN_BEATS, MetricalLevel, parity_strengths
from testkit.rhythm_signals import beat_times, drum_track


def feed(level: MetricalLevel, accents: list[tuple[float, float]], bpm: float) -> list[bool]:
    """Tracked beats with these (low, mid) rises at their frames, 10 ms frames; whether each is kept."""
    kept = []
    for i, (low, mid) in enumerate(accents):
        time_s = 1.0 + i * 60.0 / bpm
        frame = round(time_s * 100)
        rises = np.zeros((5, 3), dtype=np.float32)
        rises[2] = (low, mid, 0.5)  # frames frame-2 .. frame+2
        kept.append(level.beat(time_s, bpm, frame))
        level.fold(rises.reshape(-1).tolist(), frame - 2)
    return kept


def test_eighth_notes_taken_for_beats_are_halved_to_the_strong_ones() -> None:
    level = MetricalLevel()
    # Tracked at 140: kick or snare on every second tracked beat (odd ones), a hat alone between them.
    accents = [(0.05, 0.1) if i % 2 == 0 else ((1.0, 0.2) if i % 4 == 1 else (0.3, 1.0)) for i in range(40)]
    kept = feed(level, accents, 140.0)
    assert all(kept[:MIN_BEATS])  # a beat's own accent counts from the next one on
    assert level.factor == 2
    assert kept[MIN_BEATS + 1:] == [i % 2 == 1 for i in range(MIN_BEATS + 1, 40)]


def test_a_kick_or_snare_on_every_beat_keeps_every_beat() -> None:
    level = MetricalLevel()
    accents = [(1.0, 0.2) if i % 2 == 0 else (0.3, 1.0) for i in range(60)]  # kick, snare, kick, snare
    assert all(feed(level, accents, 150.0))
    assert level.factor == 1


def test_slow_tempi_are_never_halved() -> None:
    level = MetricalLevel()
    accents = [(0.05, 0.1) if i % 2 == 0 else (1.0, 0.5) for i in range(40)]
    assert all(feed(level, accents, 100.0))
    assert level.factor == 1


def test_the_level_comes_back_when_the_weak_beats_fill_in() -> None:
    level = MetricalLevel()
    trap = [(0.05, 0.1) if i % 2 == 0 else (1.0, 0.5) for i in range(30)]
    feed(level, trap, 140.0)
    assert level.factor == 2
    filled = [(1.0, 0.5)] * 40  # from beat 30 on, every tracked beat carries a kick
    kept = feed(level, trap + filled, 140.0)[30:]
    assert level.factor == 1 and all(kept[-10:])


def test_the_tracker_going_to_the_music_s_tempo_and_back_keeps_the_beats() -> None:
    """Halved at 200 (every second tracked beat a hat), the tracker's own tempo flips to the music's 100 for
    a few beats and back: those beats count as two eighth notes and are kept at their own tempo, and the
    eighth notes after them keep the same parity; after MIN_BEATS beats at 100 the level starts afresh."""
    level = MetricalLevel()
    trap = [(0.05, 0.1) if i % 2 == 0 else ((1.0, 0.2) if i % 4 == 1 else (0.3, 1.0)) for i in range(24)]
    kept = feed(level, trap, 200.0)  # tracked beats at 1.0 + 0.3 i s; the music's beats are the odd ones
    assert level.factor == 2 and kept[-2:] == [False, True]
    # Three beats of the tracker at 100 BPM, on the music's beats (1.0 + 0.3 * (23 + 2 k)), then 200 again.
    for k in (1, 2, 3):
        time_s = 1.0 + 0.3 * (23 + 2 * k)
        assert level.beat(time_s, 100.0, round(time_s * 100))
        assert level.factor == 1
    out = []
    for i in range(30, 40):
        time_s = 1.0 + 0.3 * i
        out.append(level.beat(time_s, 200.0, round(time_s * 100)))
    assert level.factor == 2
    assert out == [i % 2 == 1 for i in range(30, 40)]
    # The tracker stays at 100: after MIN_BEATS of its beats the level counts them as beats again.
    for k in range(MIN_BEATS + 2):
        time_s = 1.0 + 0.3 * (41 + 2 * k)
        assert level.beat(time_s, 100.0, round(time_s * 100))
    assert level.factor == 1 and not level._halved


def test_parity_strengths_are_each_band_over_its_mean() -> None:
    assert parity_strengths([2.0, 0.0], [1.0, 1.0], [1.0, 1.0]) == (3.0, 1.0)
    assert parity_strengths([1.0, 1.0], [0.0, 0.0], [1.0, 1.0]) is None  # mid never rose
    assert parity_strengths([1.0, 0.0], [1.0, 0.0], [1.0, 0.0]) is None  # no odd beat yet


def beat_f(ref: np.ndarray, est: list[float]) -> float:
    return float(mir_eval.beat.f_measure(ref, np.array(est)))


@pytest.mark.parametrize("bpm", [70.0, 100.0])
def test_slow_rock_with_eighth_hats_is_tracked_at_its_tempo(bpm: float) -> None:
    track = drum_track(beat_times([(bpm, 30.0)]), seed=11)
    result = analyze_rhythm(track.audio, track.sample_rate)
    assert result.tempo_bpm is not None and abs(result.tempo_bpm / bpm - 1.0) < 0.04
    late = [b for b in result.beats if 10.0 < b.time < 28.0]
    assert all(abs(b.bpm / bpm - 1.0) < 0.04 for b in late)
    assert beat_f(track.beats[(track.beats > 10.0) & (track.beats < 28.0)], [b.time for b in late]) > 0.95


@pytest.mark.parametrize("bpm", [140.0, 160.0])
def test_fast_rock_keeps_its_tempo(bpm: float) -> None:
    track = drum_track(beat_times([(bpm, 30.0)]), seed=12)
    result = analyze_rhythm(track.audio, track.sample_rate)
    assert result.tempo_bpm is not None and abs(result.tempo_bpm / bpm - 1.0) < 0.04
    assert beat_f(track.beats, [b.time for b in result.beats]) > 0.9


def test_the_tempo_and_next_beat_are_at_the_halved_level() -> None:
    bpm = 70.0
    track = drum_track(beat_times([(bpm, 20.0)]), seed=13)
    detector = OnsetDetector(track.sample_rate, 1)
    session = RhythmSession.beside(detector)
    block = track.sample_rate // 50
    audio = track.audio[: 15 * track.sample_rate]
    for start in range(0, len(audio), block):
        onsets = detector.process(audio[start:start + block])
        session.process(detector.take_odf(), detector.take_rows(), onsets)
    tempo = session.tempo()
    assert tempo is not None and abs(tempo.bpm / bpm - 1.0) < 0.04
    now_s = len(audio) / track.sample_rate
    upcoming = track.beats[track.beats > now_s - 0.1]
    assert abs(tempo.next_beat_time - upcoming[0]) < 0.07  # a true beat, not the eighth note between
