"""The start of a stream: no onset from the silence assumed before a stream that starts mid-sound, while a
stream that starts on a hit (at its first sample or a few ms in) still reports it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, OnsetDetector, detect_onsets, process_many
from server.dsp.opening import opening_is_attack
from testkit import signals

SR = 44100
CUTS_S = (1.234, 2.345, 3.456, 5.01)  # inside sounds of the mix (none within 20 ms after an attack)
TOLERANCE_S = 0.05  # the evaluation window of the accuracy tests


def feed(detector: OnsetDetector, samples: np.ndarray, size: int) -> list[float]:
    onsets = []
    for start in range(0, len(samples), size):
        onsets += detector.process(samples[start : start + size])
    return [o.time for o in onsets + detector.flush()]


def hit(kind: str, lead_s: float, seed: int = 3) -> np.ndarray:
    """One drum hit (or a click) starting ``lead_s`` into a file, then 0.5 s of silence."""
    rng = np.random.default_rng(seed)
    event = signals.click(SR) if kind == "click" else signals.drum(rng, SR, kind)
    lead = np.zeros(round(lead_s * SR))
    return np.concatenate([lead, 0.8 * event, np.zeros(SR // 2)]).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_a_stream_cut_inside_sounds_has_no_onset_before_its_first_attack(method: str) -> None:
    mix = signals.music_mix(SR, 8.0, seed=6)
    settings = DetectorSettings(method=method)
    rng = np.random.default_rng(18)
    for cut_s in CUTS_S:
        since = cut_s - mix.onsets_s[mix.onsets_s <= cut_s]
        assert since.size and since.min() > 0.02, "the cut must fall inside a sound, not on an attack"
        tail = mix.samples[round(cut_s * SR) :]
        first_true_s = float(mix.onsets_s[mix.onsets_s > cut_s][0] - cut_s)
        whole = [o.time for o in detect_onsets(tail, SR, settings)]
        assert whole, "the rest of the mix has onsets"
        assert whole[0] >= first_true_s - TOLERANCE_S, (cut_s, whole[:3], first_true_s)
        for size in (7, 441, 4096, int(rng.integers(100, 3000))):
            assert feed(OnsetDetector(SR, 1, settings), tail, size) == whole, (cut_s, size)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["kick", "snare", "hat", "click"])
@pytest.mark.parametrize("lead_s", [0.0, 0.005])
def test_a_file_that_starts_on_a_hit_reports_it(method: str, kind: str, lead_s: float) -> None:
    samples = hit(kind, lead_s)
    settings = DetectorSettings(method=method)
    found = [o.time for o in detect_onsets(samples, SR, settings)]
    # The hit is the first onset, where it is (the neural method reports attacks up to ~11 ms late here).
    assert found and abs(found[0] - lead_s) <= 0.015, found
    for size in (1, 64, 1000):
        assert feed(OnsetDetector(SR, 1, settings), samples, size) == found


def test_process_many_judges_each_stream_start_alone() -> None:
    mix = signals.music_mix(SR, 4.0, seed=6)
    starts = [mix.samples[round(cut_s * SR) :][: SR * 2] for cut_s in CUTS_S[:3]]
    streams = [*starts, hit("snare", 0.0)[: SR // 2]]
    alone = [detect_onsets(samples, SR) for samples in streams]
    detectors = [OnsetDetector(SR) for _ in streams]
    got: list[list[float]] = [[] for _ in streams]
    for start in range(0, SR * 2, 1000):
        pairs = [(d, s[start : start + 1000]) for d, s in zip(detectors, streams, strict=True)]
        for index, onsets in enumerate(process_many(pairs)):
            got[index] += [o.time for o in onsets]
    for index, detector in enumerate(detectors):
        got[index] += [o.time for o in detector.flush()]
    assert got == [[o.time for o in onsets] for onsets in alone]
    assert got[-1] and got[-1][0] < 0.01


def test_pickled_during_the_opening_continues_identically() -> None:
    tail = signals.music_mix(SR, 4.0, seed=6).samples[round(CUTS_S[0] * SR) :]
    detector = OnsetDetector(SR)
    first = detector.process(tail[:1500])  # less than the opening: nothing decided yet
    assert first == [] and detector.state.opening is not None
    clone = pickle.loads(pickle.dumps(detector))
    rest = detector.process(tail[1500:]) + detector.flush()
    assert clone.process(tail[1500:]) + clone.flush() == rest
    assert rest == detect_onsets(tail, SR)


def test_flush_restarts_with_a_fresh_opening() -> None:
    detector = OnsetDetector(SR)
    tail = signals.music_mix(SR, 4.0, seed=6).samples[round(CUTS_S[1] * SR) :][:SR]
    once = feed(detector, tail, 512)
    assert feed(detector, tail, 512) == once  # flush started a new stream: the same judgement again


@pytest.mark.parametrize(
    ("name", "samples", "attack"),
    [
        ("silence", np.zeros(4410, np.float32), True),
        ("rises from silence", hit("snare", 0.005)[:4410], True),
        ("snare at 0", hit("snare", 0.0)[:4410], True),
        ("steady tone", (0.5 * np.sin(np.arange(4410) * 0.07)).astype(np.float32), False),
        ("steady noise", signals.noise(SR, 0.1, seed=2).samples, False),
        ("short stream", np.full(200, 0.3, np.float32), True),
    ],
)
def test_opening_is_attack(name: str, samples: np.ndarray, attack: bool) -> None:
    assert opening_is_attack(samples, SR, -90.0) is attack
