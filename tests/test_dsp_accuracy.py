"""What the detector finds on generated signals with known onsets (mir_eval F-measure, ±50 ms)."""

from __future__ import annotations

from collections.abc import Callable

import mir_eval
import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, detect_onsets
from testkit import signals


def f_measure(signal: signals.Signal, settings: DetectorSettings | None = None) -> float:
    found = np.array([o.time for o in detect_onsets(signal.samples, signal.sample_rate, settings)])
    f, _, _ = mir_eval.onset.f_measure(signal.onsets_s, found, window=0.05)
    return float(f)


CASES: list[tuple[str, Callable[[], signals.Signal], float]] = [
    ("clicks", lambda: signals.clicks(44100, 4.0, seed=60), 1.0),
    ("tone_bursts", lambda: signals.tone_bursts(48000, 5.0, seed=61), 0.95),
    ("drums", lambda: signals.drums(44100, 6.0, seed=62), 0.95),
    ("fast_drums", lambda: signals.drums(22050, 6.0, seed=63, gap_s=0.14), 0.9),
    ("ghost_notes_-12dB", lambda: signals.ghost_notes(44100, 4.0, seed=74), 0.85),  # 0.8 with the mean
    ("plucks", lambda: signals.plucks(32000, 6.0, seed=64), 0.85),
    ("soft_attacks", lambda: signals.soft_attacks(44100, 8.0, seed=65), 0.85),
    ("chords", lambda: signals.chords(16000, 6.0, seed=66), 0.9),
    ("mix", lambda: signals.music_mix(44100, 8.0, seed=67), 0.85),
    ("mix_reverb_stereo", lambda: signals.music_mix(48000, 8.0, seed=68, rt60_s=0.8, stereo=True), 0.8),
    ("quiet_-50dB", lambda: signals.quiet_passage(44100, 6.0, seed=69, level_db=-50.0), 0.85),
    ("drums_dc_clipped", lambda: signals.with_dc_and_clipping(signals.drums(44100, 6.0, seed=70)), 0.9),
]


@pytest.mark.parametrize(("make", "floor"), [(m, f) for _, m, f in CASES], ids=[c[0] for c in CASES])
def test_default_settings_find_known_onsets(make: Callable[[], signals.Signal], floor: float) -> None:
    signal = make()
    assert f_measure(signal) >= floor


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_drum_hits(method: str) -> None:
    assert f_measure(signals.drums(44100, 6.0, seed=71), DetectorSettings(method=method)) >= 0.9


@pytest.mark.parametrize("lookahead_ms", [10.0, 0.0])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rate", [16000, 44100, 96000])
def test_click_timing_error_within_5_ms(method: str, rate: int, lookahead_ms: float) -> None:
    signal = signals.clicks(rate, 4.0, seed=72)
    settings = DetectorSettings(method=method, lookahead_ms=lookahead_ms)
    found = np.array([o.time for o in detect_onsets(signal.samples, rate, settings)])
    assert len(found) == len(signal.onsets_s)
    errors_ms = (found - signal.onsets_s) * 1000
    assert np.max(np.abs(errors_ms)) <= 5.0, errors_ms
    # Times are whole samples.
    assert np.allclose(found * rate, np.round(found * rate), atol=1e-6)


def test_drum_timing_error_small() -> None:
    signal = signals.drums(44100, 6.0, seed=73, gap_s=0.3)
    found = np.array([o.time for o in detect_onsets(signal.samples, 44100)])
    matches = mir_eval.util.match_events(signal.onsets_s, found, 0.05)
    errors_ms = np.array([(found[j] - signal.onsets_s[i]) * 1000 for i, j in matches])
    assert len(matches) >= 0.95 * len(signal.onsets_s)
    assert abs(float(np.median(errors_ms))) <= 5.0 and np.max(np.abs(errors_ms)) <= 15.0


@pytest.mark.parametrize(
    ("make", "rates"),
    [
        (lambda: signals.drums(96000, 5.0, seed=74), (22050, 44100, 48000, 96000)),
        # Below 22 kHz the hi-hats' band (7 kHz and up) is gone, so compare pitched material there.
        (lambda: signals.plucks(96000, 5.0, seed=79), (16000, 44100, 48000, 96000)),
    ],
    ids=["drums", "plucks"],
)
def test_sample_rate_barely_matters(make: Callable[[], signals.Signal], rates: tuple[int, ...]) -> None:
    reference = make()
    results = {}
    for rate in rates:
        signal = signals.resampled(reference, rate)
        results[rate] = np.array([o.time for o in detect_onsets(signal.samples, rate)])
    base = results[96000]
    assert len(base) >= 0.95 * len(reference.onsets_s)
    for rate, found in results.items():
        # Nearly the same onsets (the quietest may fall on either side of the threshold), within 4 ms;
        # 10 ms at 16 kHz, where the attacks' content above 8 kHz is gone.
        matches = mir_eval.util.match_events(base, found, 0.004 if rate > 16000 else 0.010)
        assert len(matches) >= 0.9 * max(len(base), len(found)), (rate, base, found)


def test_silence_gives_nothing() -> None:
    for method in METHODS:
        settings = DetectorSettings(method=method)
        assert detect_onsets(np.zeros(44100 * 3, dtype=np.float32), 44100, settings) == []


def test_constant_dc_gives_at_most_its_start() -> None:
    dc = np.full(44100 * 3, 0.5, dtype=np.float32)
    for method in METHODS:
        found = detect_onsets(dc, 44100, DetectorSettings(method=method))
        assert all(o.time < 0.05 for o in found), method


@pytest.mark.parametrize("method", METHODS)
def test_stationary_noise_gives_no_onset_storm(method: str) -> None:
    noise = signals.noise(44100, 6.0, seed=75, level_db=-20.0)
    found = detect_onsets(noise.samples, 44100, DetectorSettings(method=method))
    assert len([o for o in found if o.time > 0.1]) <= 2, [round(o.time, 3) for o in found]


def test_silence_db_gates_quiet_material() -> None:
    signal = signals.quiet_passage(44100, 6.0, seed=76, level_db=-50.0)
    assert f_measure(signal) >= 0.85
    assert detect_onsets(signal.samples, 44100, DetectorSettings(silence_db=-20.0)) == []


def test_min_interval_spaces_onsets() -> None:
    signal = signals.drums(44100, 6.0, seed=77, gap_s=0.14)
    for gap_ms in (0.0, 100.0, 250.0):
        times = [
            o.time for o in detect_onsets(signal.samples, 44100, DetectorSettings(min_interval_ms=gap_ms))
        ]
        assert len(times) >= 10
        assert np.min(np.diff(times)) >= gap_ms / 1000


def test_higher_threshold_finds_fewer() -> None:
    signal = signals.music_mix(44100, 8.0, seed=78, noise_db=-30.0)
    counts = [
        len(detect_onsets(signal.samples, 44100, DetectorSettings(threshold=t)))
        for t in (0.3, 1.0, 3.0, 10.0)
    ]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_strength_grows_with_attack_size() -> None:
    """Strength measures the rise over what sounded: a soft note over a tone is weaker than a loud one."""
    sr = 44100
    t = np.arange(sr * 2) / sr
    x = 0.1 * np.sin(2 * np.pi * 220 * t)
    burst_t = np.arange(round(0.5 * sr)) / sr
    burst = np.sin(2 * np.pi * 1500 * burst_t) * np.exp(-burst_t / 0.05)
    x[round(0.5 * sr) : round(0.5 * sr) + len(burst)] += 0.01 * burst
    x[round(1.2 * sr) : round(1.2 * sr) + len(burst)] += 0.8 * burst
    found = [o for o in detect_onsets(x.astype(np.float32), sr) if o.time > 0.1]
    assert [round(o.time, 2) for o in found] == [0.5, 1.2]
    assert found[1].strength > 1.5 * found[0].strength > 0
