"""process_many: many detectors' blocks in shared passes give bitwise what process() gives one by one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, Onset, OnsetDetector, process_many
from server.exceptions import AudioFormatError
from testkit import signals


def stream_cases() -> list[tuple[np.ndarray, int, DetectorSettings]]:
    """Streams that differ in rate, channels, sample type and settings (so in plan and pass)."""
    drums = signals.drums(16000, 2.0, seed=90)
    mix = signals.music_mix(22050, 2.0, seed=91, stereo=True)
    plucks = signals.plucks(44100, 2.0, seed=92)
    mix48 = signals.music_mix(48000, 2.0, seed=93)
    clicks = signals.clicks(8000, 2.0, seed=94)
    return [
        (drums.samples, 16000, DetectorSettings(threshold=0.5)),
        (np.round(drums.samples * 32767).astype(np.int16), 16000, DetectorSettings(threshold=0.5)),
        (mix.samples, 22050, DetectorSettings(method="complex")),
        (plucks.samples, 44100, DetectorSettings(method="hfc", lookahead_ms=0.0)),
        (plucks.samples.astype(np.float64), 44100, DetectorSettings()),
        (mix48.samples, 48000, DetectorSettings(threshold=0.3)),
        (mix48.samples, 48000, DetectorSettings(method="energy", hop_ms=5.0, frame_ms=23.0)),
        (np.stack([clicks.samples, -clicks.samples, clicks.samples], axis=1), 8000, DetectorSettings()),
        (mix48.samples[::-1].copy(), 48000, DetectorSettings(frame_ms=100.0, min_interval_ms=0.0)),
    ]


def channels_of(samples: np.ndarray) -> int:
    return 1 if samples.ndim == 1 else int(samples.shape[1])


def run_streams(batched: bool, seed: int) -> tuple[list[list[Onset]], list[np.ndarray]]:
    """Feed every case in random block sizes, step by step; switch settings and pickle mid-way."""
    rng = np.random.default_rng(seed)
    cases = stream_cases()
    detectors = [OnsetDetector(rate, channels_of(x), s) for x, rate, s in cases]
    found: list[list[Onset]] = [[] for _ in cases]
    odf: list[list[np.ndarray]] = [[] for _ in cases]
    positions = [0] * len(cases)
    for step in range(60):
        sizes = [int(rng.choice([0, 1, 7, 160, 441, 882, 960, 2000, 7000, 70000])) for _ in cases]
        blocks = [x[p : p + n] for (x, _, _), p, n in zip(cases, positions, sizes, strict=True)]
        positions = [p + n for p, n in zip(positions, sizes, strict=True)]
        if step == 20:  # every detector crosses to "another process" and back mid-stream
            detectors = [pickle.loads(pickle.dumps(d)) for d in detectors]
        if step == 30:  # new settings apply from the next block, in both ways of feeding
            detectors[2].configure(DetectorSettings(method="superflux"))
            detectors[5].configure(DetectorSettings(threshold=2.0, lookahead_ms=50.0))
        if batched:
            results = process_many(list(zip(detectors, blocks, strict=True)))
        else:
            results = [d.process(b) for d, b in zip(detectors, blocks, strict=True)]
        for k, (detector, onsets) in enumerate(zip(detectors, results, strict=True)):
            found[k] += onsets
            odf[k].append(detector.take_odf())
    for k, detector in enumerate(detectors):
        x = cases[k][0]
        found[k] += detector.process(x[positions[k] :]) + detector.flush()
        odf[k].append(detector.take_odf())
    return found, [np.concatenate(parts) for parts in odf]


@pytest.mark.parametrize("seed", [1, 2])
def test_process_many_is_bitwise_process_one_by_one(seed: int) -> None:
    one_by_one, odf_one = run_streams(batched=False, seed=seed)
    together, odf_together = run_streams(batched=True, seed=seed)
    assert sum(len(onsets) for onsets in one_by_one) >= 40, "too few onsets for the comparison to mean much"
    assert together == one_by_one
    for a, b in zip(odf_one, odf_together, strict=True):
        assert np.array_equal(a, b)


def test_many_streams_of_one_plan_in_several_passes() -> None:
    """256 streams of 20 ms blocks fill several passes; each stream still gets its own onsets."""
    signal = signals.drums(48000, 3.0, seed=95)
    offsets = [int(o) for o in np.random.default_rng(96).integers(0, 48000, 256)]
    looped = np.concatenate([signal.samples, signal.samples])
    length = len(signal.samples)
    detectors = [OnsetDetector(48000) for _ in offsets]
    alone = [OnsetDetector(48000) for _ in offsets[:8]]
    found: list[list[Onset]] = [[] for _ in offsets]
    expected: list[list[Onset]] = [[] for _ in alone]
    for start in range(0, length, 960):
        blocks = [looped[o + start : o + start + 960] for o in offsets]
        for k, onsets in enumerate(process_many(list(zip(detectors, blocks, strict=True)))):
            found[k] += onsets
        for k, detector in enumerate(alone):
            expected[k] += detector.process(blocks[k])
    assert found[:8] == expected
    assert all(len(onsets) >= 5 for onsets in found)


def test_a_detector_listed_twice_gets_its_blocks_in_order() -> None:
    signal = signals.plucks(16000, 3.0, seed=97)
    x = signal.samples
    twice = OnsetDetector(16000)
    other = OnsetDetector(16000)
    reference = OnsetDetector(16000)
    first, second, third = x[:20000], x[20000:20100], x[20100:]
    results = process_many([(twice, first), (other, first), (twice, second), (twice, third)])
    expected = [reference.process(first), reference.process(second), reference.process(third)]
    assert [results[0], results[2], results[3]] == expected
    assert results[1] == expected[0]
    assert twice.samples_in == len(x) and other.samples_in == len(first)
    assert twice.flush() == reference.flush()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([0.0, np.nan, 0.0], dtype=np.float32), "block 2: audio contains NaN or Inf"),
        (np.full(5000, np.inf, dtype=np.float32), "block 2: audio contains NaN or Inf"),
        (np.zeros(100, dtype=np.int32), "block 2: audio dtype int32"),
        (np.zeros((100, 2), dtype=np.float32), r"block 2: block shape \(100, 2\) does not match"),
    ],
)
def test_a_bad_block_is_named_and_changes_no_detector(bad: np.ndarray, message: str) -> None:
    signal = signals.drums(16000, 2.0, seed=98)
    x = signal.samples
    detectors = [OnsetDetector(16000, settings=DetectorSettings(method=m)) for m in METHODS]
    reference = [OnsetDetector(16000, settings=DetectorSettings(method=m)) for m in METHODS]
    for d in (*detectors, *reference):
        d.process(x[:5000])
    blocks = [x[5000:6000], x[5000:200000], bad, *[x[5000 : 5001 + k] for k in range(len(METHODS) - 3)]]
    with pytest.raises(AudioFormatError, match=message):
        process_many(list(zip(detectors, blocks, strict=True)))
    assert [d.samples_in for d in detectors] == [5000] * len(METHODS)
    rest = [d.process(x[5000:]) + d.flush() for d in detectors]
    assert rest == [d.process(x[5000:]) + d.flush() for d in reference]


def test_no_pairs_and_empty_blocks() -> None:
    assert process_many([]) == []
    detector = OnsetDetector(16000)
    assert process_many([(detector, np.zeros(0, dtype=np.float32))]) == [[]]
    assert detector.samples_in == 0
