"""The online beat tracker on generated drum tracks with known beats: steady tempi, tempo changes, swing,
half/double-time traps, rubato, silence; block-size invariance, pickling and bad input."""

from __future__ import annotations

import functools
import pickle
import warnings

import mir_eval
import numpy as np
import pytest

from server.dsp import OnsetDetector
from server.exceptions import SettingsError
from server.rhythm import Beat, BeatTracker, TrackerSettings
from server.rhythm.features import BandFlux, beat_strength
from testkit.rhythm_signals import DrumTrack, beat_times, drum_track
from testkit.signals import click

HOP_S = 0.01


@functools.lru_cache(maxsize=32)
def odf_of(track_key: tuple) -> tuple[DrumTrack, np.ndarray]:
    """A drum track (from a hashable key) and its beat strength (detector + band rises), 20 ms blocks."""
    segments, options = track_key
    beats = beat_times(list(segments))
    opts = dict(options)
    if "rubato_seed" in opts:
        rng = np.random.default_rng(opts.pop("rubato_seed"))
        beats = beats + np.cumsum(rng.normal(0.0, 0.008, len(beats)))
    track = drum_track(beats, **opts)
    detector = OnsetDetector(track.sample_rate, 1)
    flux = BandFlux(track.sample_rate)
    block = round(0.02 * track.sample_rate)
    strength = []
    for start in range(0, len(track.audio), block):
        chunk = track.audio[start : start + block]
        detector.process(chunk)
        strength.append(beat_strength(detector.take_odf(), flux.process(chunk)[0]))
    return track, np.concatenate(strength)


def track_beats(odf: np.ndarray, block: int = 2) -> list[Beat]:
    tracker = BeatTracker(HOP_S, time_offset_s=-HOP_S)
    beats: list[Beat] = []
    for start in range(0, len(odf), block):
        beats += tracker.process(odf[start : start + block])
    return beats


def f_measure(ref: np.ndarray, beats: list[Beat]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(mir_eval.beat.f_measure(ref, np.array([b.time for b in beats])))


def tempo_errors_after(track: DrumTrack, beats: list[Beat], after_s: float) -> np.ndarray:
    """Relative tempo error of every beat from ``after_s`` after the first true beat on."""
    times = np.array([b.time for b in beats])
    true_bpm = np.interp(times, track.beats[1:], 60.0 / np.diff(track.beats))
    late = times >= track.beats[0] + after_s
    return np.abs(np.array([b.bpm for b in beats])[late] / true_bpm[late] - 1.0)


# Known gaps, measured on this synthetic kit (bench/README.md, rhythm), not asserted here: 70 and 100 BPM
# with eighth-note hats lock to double time (the metrical level, server/rhythm/level.py, halves them after
# the tracker).


@pytest.mark.parametrize("bpm", [128, 160])
def test_steady_tempo_beats_and_bpm_issue_targets(bpm: int) -> None:
    """The issue's targets: beat F >= 0.95 and every beat's bpm within 4 % from 4 s on."""
    track, odf = odf_of((((bpm, 16.0),), (("seed", bpm),)))
    beats = track_beats(odf)
    assert f_measure(track.beats, beats) >= 0.95
    errors = tempo_errors_after(track, beats, 4.0)
    assert len(errors) > 10
    assert np.all(errors <= 0.04), errors.max()


@pytest.mark.parametrize("bpm", [175, 183, 190])
def test_fast_tempi_between_two_intervals_are_within_4_percent_from_4_s(bpm: int) -> None:
    """At 20 ms frames 175, 183 and 190 BPM are 17.1, 16.4 and 15.8 frames: the tracker follows them by
    stepping between two whole intervals 6 % apart (before, 183 fell to half time), and the reported bpm
    stays within 4 %."""
    track, odf = odf_of((((bpm, 16.0),), (("seed", bpm),)))
    beats = track_beats(odf)
    assert f_measure(track.beats, beats) >= 0.9
    errors = tempo_errors_after(track, beats, 4.0)
    assert len(errors) > 30
    assert np.all(errors <= 0.04), errors.max()
    assert np.median(errors) <= 0.015


@pytest.mark.parametrize("bpm", [128, 160])
def test_steady_tempo_is_found(bpm: int) -> None:
    """What the tracker does reach today: F >= 0.85 and a median bpm error within 2 % from 4 s on."""
    track, odf = odf_of((((bpm, 16.0),), (("seed", bpm),)))
    beats = track_beats(odf)
    assert f_measure(track.beats, beats) >= 0.85
    assert np.median(tempo_errors_after(track, beats, 4.0)) <= 0.02


def test_half_and_double_time_trap_no_hats() -> None:
    """Kick and snare only at 85 BPM: nothing at 170 or 42.5 BPM to lock to, the prior must not pull."""
    track, odf = odf_of((((85, 16.0),), (("hats", False), ("seed", 3))))
    beats = track_beats(odf)
    assert f_measure(track.beats, beats) >= 0.95
    assert np.median(tempo_errors_after(track, beats, 4.0)) <= 0.04


@pytest.mark.parametrize(
    ("first", "second"),
    [(100, 125), (140, 110)],
)
def test_follows_a_tempo_change(first: int, second: int) -> None:
    track, odf = odf_of((((first, 12.0), (second, 12.0)), (("seed", first),)))
    beats = track_beats(odf)
    change_s = track.beats[np.argmax(np.abs(np.diff(np.diff(track.beats))) > 1e-6) + 1]
    times = np.array([b.time for b in beats])
    # The music ends one beat after its last beat; the tracker may keep the beat going into the silence.
    end_s = track.beats[-1] + 0.1
    after = [b for b, t in zip(beats, times, strict=True) if change_s < t <= end_s]
    # The issue's target: from the 5th beat after the change on, every beat is on time and at the new tempo.
    settled = after[4:]
    assert settled
    for beat in settled:
        assert np.min(np.abs(track.beats - beat.time)) <= 0.07
        assert abs(beat.bpm / second - 1.0) <= 0.04


def test_swing_keeps_the_beat() -> None:
    track, odf = odf_of((((100, 16.0),), (("swing", 2.0 / 3.0), ("seed", 5))))
    assert f_measure(track.beats, track_beats(odf)) >= 0.9


def test_rubato() -> None:
    track, odf = odf_of((((105, 20.0),), (("rubato_seed", 6), ("seed", 6))))
    assert f_measure(track.beats, track_beats(odf)) >= 0.9


def test_no_beats_in_silence_and_recovers_after() -> None:
    # A noise floor at -140 dBFS: the detector's strength is relative to the recent level, so a noise
    # floor that stays audible (-70 dBFS) is "sound" to it after two seconds of silence.
    _, odf = odf_of((((120, 20.0),), (("gaps", ((8.0, 12.0),)), ("seed", 7), ("noise_db", -140.0))))
    beats = track_beats(odf)
    times = np.array([b.time for b in beats])
    # The tracker may keep the beat going for its hold time (1.5 s) into a silence, never longer.
    assert not np.any((times > 8.0 + 1.6) & (times < 12.0 - 0.07))  # 70 ms: the first hit after it
    assert np.any((times > 12.0) & (times < 14.0))  # beats resume within 2 s of the sound


def test_recovers_the_phase_after_silence() -> None:
    track, odf = odf_of((((120, 20.0),), (("gaps", ((8.0, 12.0),)), ("seed", 7), ("noise_db", -140.0))))
    beats = [b for b in track_beats(odf) if 15.0 - 0.07 <= b.time <= track.beats[-1] + 0.07]
    assert f_measure(track.beats[track.beats >= 15.0], beats) >= 0.95


def test_digital_silence_gives_no_beats() -> None:
    tracker = BeatTracker(HOP_S)
    assert tracker.process(np.zeros(1000)) == []
    assert tracker.tempo() is None


@pytest.mark.parametrize("block", [1, 3, 7, 50, 100000])
def test_block_size_invariance(block: int) -> None:
    _, odf = odf_of((((100, 12.0), (125, 12.0)), (("seed", 100),)))
    assert track_beats(odf, block) == track_beats(odf, 2)


def test_pickle_mid_stream_continues_identically() -> None:
    _, odf = odf_of((((128, 16.0),), (("seed", 128),)))
    tracker = BeatTracker(HOP_S)
    half = len(odf) // 2 + 3
    first = tracker.process(odf[:half])
    blob = pickle.dumps(tracker)
    assert len(blob) < 60_000
    restored = pickle.loads(blob)
    assert restored.process(odf[half:]) == tracker.process(odf[half:])
    assert first


def test_tempo_predicts_the_next_beat() -> None:
    track, odf = odf_of((((128, 16.0),), (("seed", 128),)))
    tracker = BeatTracker(HOP_S, time_offset_s=-HOP_S)
    cut = round(10.13 / HOP_S)
    beats = tracker.process(odf[:cut])
    tempo = tracker.tempo()
    assert tempo is not None
    now_s = cut * HOP_S
    upcoming = track.beats[track.beats > beats[-1].time + 0.1][0]
    assert now_s - 0.05 <= tempo.next_beat_time
    assert abs(tempo.next_beat_time - upcoming) <= 0.03
    assert abs(tempo.bpm / 128.0 - 1.0) <= 0.02
    assert 0.0 < tempo.confidence <= 1.0


def test_asking_for_the_tempo_changes_nothing() -> None:
    """``tempo()`` after every block leaves the tracker's state alone: the beats that follow are bitwise
    those of a tracker never asked (it once rescaled the forward variable, so later bits differed)."""
    _, odf = odf_of((((100, 12.0), (125, 12.0)), (("seed", 100),)))
    asked, quiet = BeatTracker(HOP_S), BeatTracker(HOP_S)
    beats_asked: list[Beat] = []
    beats_quiet: list[Beat] = []
    tempi = 0
    for start in range(0, len(odf), 2):
        beats_asked += asked.process(odf[start : start + 2])
        beats_quiet += quiet.process(odf[start : start + 2])
        before = pickle.dumps(asked)
        tempi += asked.tempo() is not None
        assert pickle.dumps(asked) == before
    assert tempi > 1000
    assert beats_asked == beats_quiet


def test_beats_are_reported_without_look_ahead() -> None:
    """Each beat comes out of the call whose input reaches its time (plus one 20 ms frame)."""
    _, odf = odf_of((((100, 16.0),), (("seed", 100),)))
    tracker = BeatTracker(HOP_S)
    for i, value in enumerate(odf):
        for beat in tracker.process([value]):
            assert beat.time <= (i + 1) * HOP_S
            assert beat.time >= (i + 1) * HOP_S - 0.25 * 60.0 / 100.0


@pytest.mark.parametrize("bad", [[-1.0], [np.nan], [np.inf]])
def test_bad_input_raises_and_leaves_state(bad: list[float]) -> None:
    tracker = BeatTracker(HOP_S)
    tracker.process(np.ones(10))
    with pytest.raises(ValueError, match="finite and non-negative"):
        tracker.process(bad)
    assert tracker.frames_in == 10


def test_settings_are_validated() -> None:
    with pytest.raises(SettingsError, match="min_bpm"):
        TrackerSettings(min_bpm=200.0, max_bpm=100.0)
    with pytest.raises(SettingsError, match="prior_bpm"):
        TrackerSettings(prior_bpm=float("nan"))
    with pytest.raises(ValueError, match="hop_s"):
        BeatTracker(0.0)


def click_train_strength(bpm: float, seconds: float, rate: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """Beat times of a click every beat (``tests.signals.click``), and its beat strength, 20 ms blocks."""
    beats = beat_times([(bpm, seconds)])
    audio = np.zeros(int((beats[-1] + 1.0) * rate))
    sound = click(rate)
    for t in beats:
        start = round(t * rate)
        audio[start : start + len(sound)] += sound
    audio = (0.5 * audio / np.abs(audio).max()).astype(np.float32)
    detector = OnsetDetector(rate, 1)
    flux = BandFlux(rate)
    strength = []
    for start in range(0, len(audio), 882):
        chunk = audio[start : start + 882]
        detector.process(chunk)
        strength.append(beat_strength(detector.take_odf(), flux.process(chunk)[0]))
    return beats, np.concatenate(strength)


@pytest.mark.parametrize("bpm", [60, 90, 120, 150, 175, 190, 200])
def test_click_trains(bpm: int) -> None:
    """One click per beat, nothing between: a first beat within 4 s, then every beat and its tempo."""
    beats_s, strength = click_train_strength(bpm, 16.0)
    beats = track_beats(strength)
    assert beats[0].time <= beats_s[0] + 4.0
    settled = beats_s[0] + 4.0
    # Until the last click: after it the tracker keeps the beat for its hold time (tested below).
    heard = [b for b in beats if settled - 0.07 <= b.time <= beats_s[-1] + 0.07]
    assert f_measure(beats_s[beats_s >= settled], heard) >= 0.95
    times = np.array([b.time for b in beats])
    late = [b.bpm for b, t in zip(beats, times, strict=True) if beats_s[0] + 4.0 <= t <= beats_s[-1]]
    assert late
    assert max(abs(b / bpm - 1.0) for b in late) <= 0.04
