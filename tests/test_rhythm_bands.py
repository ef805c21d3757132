"""Per-onset drum bands on a generated kit with known kick, snare and hi-hat hits, decided from the attack's
samples (look-ahead 0, the default) or from the frame centred on the attack (a look-ahead); the band front
end's block-size invariance and pickling; the attack's energies."""

from __future__ import annotations

import pickle
import warnings

import mir_eval
import numpy as np
import pytest

from server.dsp import DetectorSettings, OnsetDetector, detect_onsets
from server.dsp.attack import attack_energies, attack_filters
from server.rhythm import RhythmSession, analyze_rhythm
from server.rhythm.bands import OnsetBands, attack_scores, peak_scores, strongest
from server.rhythm.features import BandFlux
from testkit.rhythm_signals import DrumTrack, beat_times, drum_track


def rises_of(audio: np.ndarray, rate: int, block: int) -> tuple[np.ndarray, BandFlux]:
    flux = BandFlux(rate)
    out = [flux.process(audio[start : start + block])[1] for start in range(0, len(audio), block)]
    return np.concatenate(out), flux


LOOKAHEADS_MS = [0.0, 10.0]  # the default (bands from the attack's samples), and the centred frame's rule


def bands_of(track: DrumTrack, lookahead_ms: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Our onsets of a track and the band of each, streamed in 20 ms blocks (the live path)."""
    settings = DetectorSettings(lookahead_ms=lookahead_ms)
    result = analyze_rhythm(track.audio, track.sample_rate, settings=settings)
    onsets = np.array([b.onset.time for b in result.onsets])
    alone = detect_onsets(track.audio, track.sample_rate, settings)
    np.testing.assert_array_equal(onsets, [o.time for o in alone])
    return onsets, np.array([b.band for b in result.onsets])


def band_f(reference: np.ndarray, onsets: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(mir_eval.onset.f_measure(reference, onsets, window=0.05)[0])


def share_named(hits: np.ndarray, onsets: np.ndarray, names: np.ndarray, band: str) -> float:
    """Of the onsets within 50 ms of a hit, the share named ``band`` (the detector's own extra or missed
    onsets are its business, not the band's)."""
    near = np.array([np.min(np.abs(hits - t)) <= 0.05 for t in onsets])
    assert near.sum() >= 0.9 * len(hits)
    return float(np.mean(names[near] == band))


@pytest.mark.parametrize("lookahead_ms", LOOKAHEADS_MS)
@pytest.mark.parametrize("bpm", [90, 140])
def test_each_drum_alone_gets_its_band(bpm: int, lookahead_ms: float) -> None:
    """Kick and snare without hats, then hats alone: every hit is one drum, so its band is known."""
    track = drum_track(beat_times([(bpm, 12.0)]), seed=bpm, kinds=("kick", "snare"))
    onsets, names = bands_of(track, lookahead_ms)
    # Measured when written: every kick low; snares mid 8 of 9 at 90 BPM, 14 of 14 at 140.
    assert share_named(track.hits["kick"], onsets, names, "low") >= 0.95
    assert share_named(track.hits["snare"], onsets, names, "mid") >= 0.85
    hats = drum_track(beat_times([(bpm, 12.0)]), seed=bpm + 1, kinds=("hat",))
    onsets, names = bands_of(hats, lookahead_ms)
    assert share_named(hats.hits["hat"], onsets, names, "high") >= 0.95


@pytest.mark.parametrize("lookahead_ms", LOOKAHEADS_MS)
@pytest.mark.parametrize("bpm", [90, 140])
def test_full_kit_kick_snare_and_lone_hats(bpm: int, lookahead_ms: float) -> None:
    """The whole kit: a kick or snare hit carries a hat, "strongest attack" then names the drum; hats between
    the beats are alone. Measured on this kit when written: low 0.92 / 0.95, mid 0.69 / 0.90, lone hats
    1.00 / 1.00 at 90 / 140 BPM; a snare hit with a hat on it is sometimes named "high" or "low"."""
    track = drum_track(beat_times([(bpm, 16.0)]), seed=bpm)
    onsets, names = bands_of(track, lookahead_ms)
    lone_hats = np.array([h for h in track.hits["hat"] if np.min(np.abs(track.beats - h)) > 0.05])
    assert band_f(track.hits["kick"], onsets[names == "low"]) >= 0.85
    assert band_f(track.hits["snare"], onsets[names == "mid"]) >= 0.65
    assert band_f(lone_hats, onsets[names == "high"]) >= 0.95


def test_classify_picks_the_largest_group() -> None:
    scores = [[3.0, 1.0, 0.5], [0.1, 0.2, 0.15], [0.0, 0.0, 1.0]]
    assert [strongest(row) for row in scores] == ["low", "mid", "high"]


def test_onsets_outside_the_frames_count_as_no_rise() -> None:
    rises = [1.0] * (5 * 3)  # 5 frames of low, mid, high
    scores = [peak_scores(rises, frame, (1.0, 2.0, 3.0)) for frame in (-10, 2, 50)]
    assert scores == [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("block", [1, 441, 1000, 4410, 10**6])
def test_band_front_end_is_block_size_invariant(block: int) -> None:
    track = drum_track(beat_times([(120, 4.0)]), seed=11)
    reference, _ = rises_of(track.audio, track.sample_rate, 882)
    rises, _ = rises_of(track.audio, track.sample_rate, block)
    np.testing.assert_array_equal(rises, reference)


def test_front_end_and_classifier_pickle_mid_stream() -> None:
    track = drum_track(beat_times([(120, 4.0)]), seed=12)
    audio, rate = track.audio, track.sample_rate
    half = len(audio) // 2 + 17
    flux = BandFlux(rate)
    flux.process(audio[:half])
    restored = pickle.loads(pickle.dumps(flux))
    again, expected = restored.process(audio[half:]), flux.process(audio[half:])
    np.testing.assert_array_equal(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    bands = OnsetBands()
    rows = np.abs(np.random.default_rng(0).standard_normal((40, 3))).tolist()
    bands.classify_rows(rows[:20])
    again = pickle.loads(pickle.dumps(bands))
    assert again.classify_rows(rows[20:]) == bands.classify_rows(rows[20:])


@pytest.mark.parametrize("lookahead_ms", LOOKAHEADS_MS)
def test_an_onset_comes_with_its_band_in_the_block_it_is_decided_in(lookahead_ms: float) -> None:
    """Live, 20 ms blocks: the session names every onset's band in the call that brings the onset (the
    attack's samples without look-ahead; with one, the centred frame is in by then), so a band never
    delays an onset."""
    track = drum_track(beat_times([(120, 8.0)]), seed=21)
    audio, rate = track.audio, track.sample_rate
    detector = OnsetDetector(rate, 1, DetectorSettings(lookahead_ms=lookahead_ms))
    session = RhythmSession.beside(detector)
    found_any = False
    for start in range(0, len(audio), rate // 50):
        onsets = detector.process(audio[start : start + rate // 50])
        assert all((o.attack is not None) == (lookahead_ms == 0.0) for o in onsets)
        _, banded = session.process(detector.take_odf(), detector.take_rows(), onsets)
        assert [b.onset for b in banded] == onsets
        found_any = found_any or bool(onsets)
    assert found_any


def test_bands_from_the_attack_do_not_depend_on_the_blocks() -> None:
    track = drum_track(beat_times([(100, 6.0)]), seed=22)
    results = [analyze_rhythm(track.audio, track.sample_rate, block_s=block_s)
               for block_s in (0.01, 0.02, 0.0137, 0.5, 10.0)]
    reference = [(b.onset.time, b.onset.strength, b.band) for b in results[0].onsets]
    assert len(reference) > 20
    for result in results[1:]:
        assert [(b.onset.time, b.onset.strength, b.band) for b in result.onsets] == reference


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_attack_energies_sort_a_low_tone_a_middle_tone_and_hiss(rate: int) -> None:
    """A 60 Hz tone's energy is below 200 Hz, a 1 kHz tone's between 200 Hz and 8 kHz, white noise high-passed
    at 10 kHz above 8 kHz (where the rate has such a band; at 16 kHz it has none and reads 0)."""
    frame = round(0.04 * rate)
    t = np.arange(frame) / rate
    noise = np.random.default_rng(rate).standard_normal(frame)
    hiss = np.diff(np.diff(np.diff(noise, prepend=0.0), prepend=0.0), prepend=0.0) / 8  # a steep high tilt
    filters = attack_filters(rate)
    for signal, band in ((np.sin(2 * np.pi * 60 * t), 0), (np.sin(2 * np.pi * 1000 * t), 1), (hiss, 2)):
        energies = attack_energies(signal.astype(np.float32), frame // 2, filters)
        if band == 2 and rate < 20000:
            assert energies[2] == 0.0
            continue
        assert int(np.argmax(energies)) == band, energies
    silence = np.zeros(frame, dtype=np.float32)
    assert attack_energies(silence, frame // 2, filters) == (0.0, 0.0, 0.0)


def test_attack_scores_weigh_the_energies_by_the_frames_rise() -> None:
    sums = [0.0, 0.0, 0.0, 16.0, 1.0, 0.0]  # frame 0: no rise; frame 1: low 16, mid 1, high 0
    assert attack_scores(sums, 1, (1.0, 2.0, 3.0)) == pytest.approx([2.0, 2.0, 3.0 * 1e-9**0.25])
    assert attack_scores(sums, 7, (1.0, 1.0, 1.0)) == pytest.approx([1e-9**0.25] * 3)  # outside: no rise
