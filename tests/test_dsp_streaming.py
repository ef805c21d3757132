"""The streaming contract of OnsetDetector: block-size invariance, pickling, configure, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, Onset, OnsetDetector, detect_onsets
from server.exceptions import AudioFormatError, SettingsError
from testkit import signals


def feed(
    detector: OnsetDetector, samples: np.ndarray, sizes: list[int] | int
) -> tuple[list[Onset], np.ndarray]:
    """Feed ``samples`` in blocks (a fixed size or a cycle of sizes); return onsets and the whole ODF."""
    cycle = [sizes] if isinstance(sizes, int) else sizes
    onsets: list[Onset] = []
    odf: list[np.ndarray] = []
    start, k = 0, 0
    while start < len(samples):
        size = cycle[k % len(cycle)]
        onsets += detector.process(samples[start : start + size])
        odf.append(detector.take_odf())
        start += size
        k += 1
    onsets += detector.flush()
    odf.append(detector.take_odf())
    return onsets, np.concatenate(odf)


def short_signals() -> list[signals.Signal]:
    mix = signals.music_mix(22050, 2.5, seed=41, stereo=True, rt60_s=0.3)
    return [signals.drums(16000, 2.5, seed=40), mix, signals.plucks(44100, 2.0, seed=42)]


@pytest.mark.parametrize("lookahead_ms", [10.0, 0.0])  # 0: attacks placed from the frame's samples
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("signal", short_signals(), ids=lambda s: f"{s.name}@{s.sample_rate}")
def test_any_block_sizes_give_identical_onsets_and_odf(method: str, signal: signals.Signal,
                                                       lookahead_ms: float) -> None:
    # threshold 0.5: sensitive, many decisions to compare
    settings = DetectorSettings(method=method, threshold=0.5, lookahead_ms=lookahead_ms)
    channels = 1 if signal.samples.ndim == 1 else signal.samples.shape[1]
    whole, whole_odf = feed(
        OnsetDetector(signal.sample_rate, channels, settings), signal.samples, len(signal.samples)
    )
    assert len(whole) >= 5, "the signal must give onsets for the comparison to mean anything"
    rng = np.random.default_rng(7)
    random_sizes = [int(n) for n in rng.integers(0, 3000, 50)]
    for sizes in (7, 512, 4096, random_sizes):
        got, got_odf = feed(OnsetDetector(signal.sample_rate, channels, settings), signal.samples, sizes)
        assert got == whole, f"block sizes {sizes if isinstance(sizes, int) else 'random'}"
        assert np.array_equal(got_odf, whole_odf), "the detection function must be bitwise identical"
    assert detect_onsets(signal.samples, signal.sample_rate, settings) == whole


def test_single_sample_blocks_match_whole() -> None:
    signal = signals.drums(16000, 1.2, seed=43)
    whole = detect_onsets(signal.samples, 16000)
    got, _ = feed(OnsetDetector(16000), signal.samples, 1)
    assert len(whole) >= 3
    assert got == whole


def test_pickle_mid_stream_continues_identically() -> None:
    signal = signals.music_mix(44100, 3.0, seed=44)
    half = len(signal.samples) // 2 + 123
    detector = OnsetDetector(44100)
    first = detector.process(signal.samples[:half])
    blob = pickle.dumps(detector)
    assert len(blob) < 40_000, f"pickled detector is {len(blob)} bytes"
    clone = pickle.loads(blob)
    rest_original = detector.process(signal.samples[half:]) + detector.flush()
    rest_clone = clone.process(signal.samples[half:]) + clone.flush()
    assert rest_clone == rest_original
    assert first + rest_original == detect_onsets(signal.samples, 44100)
    assert clone.samples_in == 0 and clone.latency_s == detector.latency_s


def test_configure_same_settings_keeps_state() -> None:
    signal = signals.drums(22050, 3.0, seed=45)
    detector = OnsetDetector(22050)
    out = detector.process(signal.samples[:30000])
    detector.configure(DetectorSettings.from_mapping({"threshold": 1.0}))
    assert detector.samples_in == 30000
    out += detector.process(signal.samples[30000:]) + detector.flush()
    assert out == detect_onsets(signal.samples, 22050)


def test_configure_applies_from_next_block_without_reset() -> None:
    signal = signals.drums(22050, 4.0, seed=46)
    split = len(signal.samples) // 2
    baseline = detect_onsets(signal.samples, 22050)
    detector = OnsetDetector(22050)
    before = detector.process(signal.samples[:split])
    detector.configure(DetectorSettings.from_mapping({"threshold": 100.0}))
    after = detector.process(signal.samples[split:]) + detector.flush()
    assert before == [o for o in baseline if o in before] and len(before) >= 3
    # Only frames decided before the change but not yet reported could still appear; nothing later does.
    assert all(o.time < split / 22050 for o in after)
    # A steep threshold drop afterwards finds onsets again, at times that continue the stream's clock.
    detector = OnsetDetector(22050, settings=DetectorSettings(threshold=100.0))
    silent = detector.process(signal.samples[:split])
    detector.configure(DetectorSettings())
    later = detector.process(signal.samples[split:]) + detector.flush()
    assert silent == []
    expected = [o for o in baseline if o.time > split / 22050 + 0.05]
    assert {round(o.time, 6) for o in expected} <= {round(o.time, 6) for o in later}


def test_configure_method_switch_mid_stream_has_no_spurious_onset() -> None:
    sr = 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    for old, new in [(a, b) for a in METHODS for b in METHODS if a != b]:
        detector = OnsetDetector(sr, settings=DetectorSettings(method=old))
        found = detector.process(tone[: sr + 77])
        detector.configure(DetectorSettings(method=new))
        found += detector.process(tone[sr + 77 :]) + detector.flush()
        assert [o for o in found if o.time > 0.1] == [], (old, new)


def test_configure_rejects_grid_change_and_keeps_settings() -> None:
    detector = OnsetDetector(16000)
    detector.process(np.zeros(5000, dtype=np.float32))
    with pytest.raises(SettingsError) as info:
        detector.configure(DetectorSettings(hop_ms=5.0))
    assert info.value.name == "hop_ms" and info.value.value == 5.0
    assert detector.settings == DetectorSettings() and detector.samples_in == 5000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected_with_state_unchanged(bad: float) -> None:
    signal = signals.drums(16000, 2.0, seed=47)
    detector = OnsetDetector(16000)
    out = detector.process(signal.samples[:10000])
    poisoned = signal.samples[10000:12000].copy()
    poisoned[500] = bad
    with pytest.raises(AudioFormatError, match="NaN or Inf"):
        detector.process(poisoned)
    assert detector.samples_in == 10000
    out += detector.process(signal.samples[10000:]) + detector.flush()
    assert out == detect_onsets(signal.samples, 16000)


def test_int16_and_float64_input_match_float32() -> None:
    signal = signals.drums(16000, 2.0, seed=48)
    as_int16 = np.round(signal.samples * 32767).astype(np.int16)
    from_int = detect_onsets(as_int16, 16000)
    from_float = detect_onsets(as_int16.astype(np.float32) / 32768, 16000)
    assert from_int == from_float and len(from_int) >= 5
    assert detect_onsets(signal.samples.astype(np.float64), 16000) == detect_onsets(signal.samples, 16000)


def test_multichannel_is_downmixed() -> None:
    signal = signals.drums(16000, 2.0, seed=49)
    stereo = np.stack([signal.samples, signal.samples], axis=1)
    quad = np.stack([signal.samples, np.zeros_like(signal.samples)] * 2, axis=1) * 2
    mono = detect_onsets(signal.samples, 16000)
    assert detect_onsets(stereo, 16000) == mono
    assert [round(o.time, 6) for o in detect_onsets(quad, 16000)] == [round(o.time, 6) for o in mono]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (np.zeros(10, dtype=np.int32), "dtype int32"),
        (np.zeros(10, dtype=np.complex64), "dtype complex64"),
        (np.zeros((10, 3), dtype=np.float32), r"\(10, 3\) does not match \(n, 2\)"),
        (np.zeros(10, dtype=np.float32), "1-D block is mono"),
        (np.zeros((2, 5, 2), dtype=np.float32), "does not match"),
    ],
)
def test_bad_blocks_rejected(block: np.ndarray, message: str) -> None:
    detector = OnsetDetector(16000, channels=2)
    with pytest.raises(AudioFormatError, match=message):
        detector.process(block)
    assert detector.samples_in == 0


@pytest.mark.parametrize(("rate", "channels"), [(7999, 1), (192001, 1), (0, 1), (16000, 0), (16000, 65)])
def test_bad_rate_or_channels_rejected(rate: int, channels: int) -> None:
    with pytest.raises(AudioFormatError, match=str(rate) if rate != 16000 else str(channels)):
        OnsetDetector(rate, channels)


def _reported_in_blocks(detector: OnsetDetector, samples: np.ndarray, block: int) -> list[tuple[Onset, int]]:
    """Each onset with the samples fed when it came out, feeding ``block`` samples at a time."""
    reported_at: list[tuple[Onset, int]] = []
    for start in range(0, len(samples), block):
        for onset in detector.process(samples[start : start + block]):
            reported_at.append((onset, detector.samples_in))
    return reported_at


def test_reports_latency_and_onsets_within_it() -> None:
    sr = 48000
    assert OnsetDetector(sr).latency_s == pytest.approx(0.010)  # the default: no look-ahead, one hop
    detector = OnsetDetector(sr, settings=DetectorSettings(lookahead_ms=10.0))
    hop = round(0.010 * sr)
    assert detector.hop_s == hop / sr
    assert detector.latency_s == pytest.approx(0.010 + 0.010)  # look-ahead + one hop
    signal = signals.clicks(sr, 3.0, seed=50)
    reported_at = _reported_in_blocks(detector, signal.samples, 48)
    assert len(reported_at) == len(signal.onsets_s)
    frame_s = detector.settings.frame_ms / 1000
    for onset, samples_in in reported_at:
        delay_s = samples_in / sr - onset.time
        # The attack reaches the window's sensitive part after at most ~half a frame, then the look-ahead.
        assert 0 < delay_s <= frame_s / 2 + detector.latency_s + 48 / sr


def test_without_lookahead_an_onset_comes_with_the_hop_that_holds_its_attack() -> None:
    sr = 48000
    detector = OnsetDetector(sr, settings=DetectorSettings(lookahead_ms=0.0))
    hop = round(0.010 * sr)
    assert detector.latency_s == pytest.approx(0.010)  # one hop
    signal = signals.clicks(sr, 3.0, seed=50)
    reported_at = _reported_in_blocks(detector, signal.samples, 48)
    assert len(reported_at) == len(signal.onsets_s)
    for (onset, samples_in), click_s in zip(reported_at, signal.onsets_s, strict=True):
        assert abs(onset.time - click_s) <= 0.001  # placed from the frame's own samples
        # Reported with the first frame whose newest hop holds the click, the block after that frame ended.
        frame_end = (int(click_s * sr) // hop + 1) * hop
        assert frame_end <= samples_in < frame_end + 48


def test_empty_blocks_and_flush_restart() -> None:
    signal = signals.clicks(16000, 2.0, seed=51)
    detector = OnsetDetector(16000)
    assert detector.process(np.zeros(0, dtype=np.float32)) == []
    first = detector.process(signal.samples) + detector.flush()
    assert detector.samples_in == 0
    second = detector.process(signal.samples) + detector.flush()
    assert first == second and len(first) == len(signal.onsets_s)
