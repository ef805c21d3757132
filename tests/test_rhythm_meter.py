"""Meter and downbeat (bar_position): the causal meter tracker on accent sequences with known answers, and
the rhythm session on generated drum tracks in 3 and 4, at several tempi, with swing and a tempo change."""

from __future__ import annotations

import numpy as np
import pytest

from server.rhythm import analyze_rhythm
from server.rhythm.meter import MIN_BEATS, BeatCount, MeterTracker, peaks_of, position_accents
from testkit.rhythm_signals import bar_position_score, beat_times, drum_track


def feed(tracker: MeterTracker, accents: list[float], bpm: float = 120.0, start_s: float = 0.0,
         skip: frozenset[int] = frozenset()) -> list[int | None]:
    """Beats with these accents (as a low-band rise at each beat's frame), 100 frames of 10 ms per beat."""
    out = []
    for i, accent in enumerate(accents):
        if i in skip:
            continue
        frame = round((start_s + i * 60.0 / bpm) * 100)
        rises = np.zeros((5, 3), dtype=np.float32)
        rises[2] = (max(accent, 0.0), max(-accent, 0.0), 0.0)  # frames frame-2 .. frame+2
        out.append(tracker.beat(start_s + i * 60.0 / bpm, bpm, frame))
        tracker.fold(rises.reshape(-1).tolist(), frame - 2)
    return out


@pytest.mark.parametrize(("pattern", "meter"), [((1.0, -0.5, 0.6, -0.5), 4), ((1.0, -0.5, -0.5), 3)])
def test_a_periodic_accent_gives_its_meter_and_downbeat(pattern: tuple[float, ...], meter: int) -> None:
    tracker = MeterTracker()
    accents = [pattern[(i + 1) % len(pattern)] for i in range(40)]  # the stream starts on beat 2
    positions = feed(tracker, accents)
    assert positions[:MIN_BEATS] == [None] * MIN_BEATS  # a beat's own accent counts from the next one
    want = [(i + 1) % meter + 1 for i in range(40)]
    assert positions[MIN_BEATS:] == want[MIN_BEATS:]
    assert tracker.meter == meter


def test_no_clear_accent_gives_no_bar_position() -> None:
    rng = np.random.default_rng(3)
    tracker = MeterTracker()
    positions = feed(tracker, list(rng.normal(0.0, 0.05, 16) + 1.0))  # every beat alike, a little noise
    assert positions == [None] * 16


def test_a_missed_beat_keeps_the_count_and_a_long_gap_forgets() -> None:
    tracker = MeterTracker()
    pattern = (1.0, -0.5, 0.6, -0.5)
    accents = [pattern[i % 4] for i in range(40)]
    positions = feed(tracker, accents, skip=frozenset({21}))  # beat 22 never reported
    assert positions[-10:] == [(i % 4) + 1 for i in range(30, 40)]
    # 10 beat intervals of silence: everything is forgotten, positions come back only after MIN_BEATS.
    after = feed(tracker, accents[:12], start_s=(40 + 10) * 0.5)
    assert after[:MIN_BEATS] == [None] * MIN_BEATS and after[-1] == 4


def test_a_count_that_depends_on_the_tempo_used_starts_afresh() -> None:
    # Start-up: beats 0.64 s apart, the tracker first at 164 BPM, then one beat at 188 (its double-time
    # hypothesis), then 97. 0.64 s is 2 beats at 188 but 1 at 97: counted at the new beat's tempo alone,
    # the count would be a beat off for good.
    beats = [(1.12, 164.0), (1.76, 188.0), (2.36, 97.0), (2.98, 97.0), (3.60, 97.0)]
    plain, checked = BeatCount(), BeatCount(both_tempi=True)
    assert [plain.add(t, bpm, 0) for t, bpm in beats] == [False] * 5
    assert plain.index == 5  # 2 + 1 + 1 + 1: one too many
    assert [checked.add(t, bpm, 0) for t, bpm in beats] == [False, False, True, False, False]
    assert checked.index == 2  # counted afresh from the beat at 2.36 s
    # At a steady tempo both count alike, beats missed included.
    steady = [(0.5 * i, 120.0) for i in (0, 1, 2, 4, 5)]
    plain, checked = BeatCount(), BeatCount(both_tempi=True)
    assert [plain.add(t, b, 0) for t, b in steady] == [checked.add(t, b, 0) for t, b in steady] == [False] * 5
    assert plain.index == checked.index == 5


def test_peaks_near_the_frame_and_accents_each_band_over_its_mean() -> None:
    rises = np.zeros((10, 3), dtype=np.float32)
    rises[4] = (3.0, 1.0, 5.0)
    rises[6, 1] = 2.0
    sums = rises.reshape(-1).tolist()
    assert peaks_of(sums, 5) == (3.0, 2.0)  # frames 3..7
    assert peaks_of(sums, 2) == (3.0, 1.0)  # frames 0..4
    assert peaks_of(sums, 1) == (0.0, 0.0)
    assert peaks_of(sums, 10) == (0.0, 0.0)  # beyond the rises so far: what is there
    assert peaks_of(sums, 40) == (0.0, 0.0)
    # Two positions, two beats each: low sums 4 and 0 (mean 1 per beat), mid sums 1 and 3 (mean 1).
    accents = position_accents([4.0, 0.0], [1.0, 3.0], [2.0, 2.0])
    assert accents is not None and accents == pytest.approx([2.0 - 0.5, 0.0 - 1.5])
    assert position_accents([1.0, 0.0], [1.0, 1.0], [1.0, 0.0]) is None


# (meter, segments, swing, seconds of music before the first bar position at most, share of beats positioned)
GENERATED_METERS = [
    (4, [(120.0, 20.0)], 0.5, 6.0, 0.6),
    # The tracker starts this kit at double time (192-200 BPM for 1.7-3.3 s: the change weights of branch
    # tempo let it follow 15.6 frames), so its positions come from 8.6 s (20 of 36 beats); they are right.
    # A known cost of that change, bench/README.md "Branch tempo".
    (4, [(96.0, 20.0)], 0.5, 9.5, 0.5),
    (4, [(150.0, 20.0)], 0.5, 6.0, 0.6),
    (3, [(132.0, 20.0)], 0.5, 6.0, 0.6), (3, [(150.0, 20.0)], 0.5, 6.0, 0.6),
    (4, [(118.0, 20.0)], 2 / 3, 6.0, 0.6),
    (4, [(110.0, 12.0), (140.0, 12.0)], 0.5, 6.0, 0.6),
]


@pytest.mark.parametrize(("meter", "segments", "swing", "first_within_s", "positioned_share"),
                         GENERATED_METERS)
def test_generated_tracks_get_their_bar_positions(meter: int, segments: list[tuple[float, float]],
                                                  swing: float, first_within_s: float,
                                                  positioned_share: float) -> None:
    track = drum_track(beat_times(segments), meter=meter, swing=swing, seed=71)
    result = analyze_rhythm(track.audio, track.sample_rate)
    times = [b.time for b in result.beats]
    positions = [b.bar_position for b in result.beats]
    positioned, matched, correct = bar_position_score(track.beats, track.bar_positions, times, positions)
    first = next(t for t, p in zip(times, positions, strict=True) if p is not None)
    assert first <= track.beats[0] + first_within_s  # seconds of music
    assert positioned >= positioned_share * len(times), positions
    assert matched >= 0.9 * positioned
    assert correct >= 0.9 * matched, (correct, matched, positions)


def test_after_a_tempo_change_the_bar_positions_come_right_again() -> None:
    # 110 -> 140 BPM: the first beat off the old grid forgets the count; the meter relocks at the new tempo.
    track = drum_track(beat_times([(110.0, 12.0), (140.0, 12.0)]), seed=71)
    result = analyze_rhythm(track.audio, track.sample_rate)
    late = [b for b in result.beats if b.time > 19.0]
    positioned, matched, correct = bar_position_score(
        track.beats, track.bar_positions, [b.time for b in late], [b.bar_position for b in late])
    assert positioned >= 8 and correct == matched >= positioned - 1, [b.bar_position for b in late]
