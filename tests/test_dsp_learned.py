"""The learned onset detector's serving side: features, the committed network, and the method's contract."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import mir_eval
import numpy as np
import pytest

from server.dsp import DetectorSettings, Onset, OnsetDetector, detect_onsets, neural, process_many
from server.dsp import neural_features as nf
from server.dsp.methods import METHOD_TABLE
from server.dsp.peaks import mask_decay
from server.exceptions import SettingsError
from testkit import signals

RATES = (8000, 16000, 22050, 44100, 48000, 96000)


@pytest.mark.parametrize("rate", RATES)
def test_every_rate_gives_the_same_bands_in_hz(rate: int) -> None:
    grid = nf.network_grid(rate)
    assert grid.hop == round(nf.HOP_S * rate)
    bank = nf.fixed_bank(rate, grid.fft_size, nf.BANDS_PER_OCTAVE)
    assert bank.n_bands == nf.n_bands(nf.BANDS_PER_OCTAVE) == 104
    sums = np.asarray(bank.weights.sum(axis=1)).ravel()
    used = sums > 0
    assert np.allclose(sums[used], 1.0, atol=1e-5), "every band is a weighted mean"
    assert used[0], "the lowest band reads at least one bin"
    centres = nf.FMIN_HZ * 2.0 ** (np.arange(bank.n_bands) / nf.BANDS_PER_OCTAVE)
    assert not used[centres > 0.96 * rate / 2].any(), "no band above Nyquist reads anything"
    assert used[centres < 0.94 * rate / 2].all()
    assert bank.stop_bin <= grid.n_bins


def test_a_tone_lights_the_band_of_its_frequency() -> None:
    rate = 44100
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    features, power = nf.file_features(rate, tone)
    bands = nf.n_bands(nf.BANDS_PER_OCTAVE)
    expected = round(np.log2(1000.0 / nf.FMIN_HZ) * nf.BANDS_PER_OCTAVE)
    assert abs(int(np.argmax(features[:bands, 50])) - expected) <= 1
    assert 10 * np.log10(power[50]) == pytest.approx(10 * np.log10(0.125), abs=0.1)  # 0.5 amplitude sine
    assert features[bands:, 60:].max() < 1e-3, "a steady tone does not rise"
    assert features[bands:, 1:5].max() > 0.5, "its start does"


def test_features_are_never_negative_and_silence_is_zero() -> None:
    grid = nf.network_grid(16000)
    features, power = nf.file_features(16000, np.zeros(16000, dtype=np.float32))
    assert features.shape == (nf.n_features(), (16000 - grid.hop) // grid.hop + 1)
    assert not features.any() and not power.any()
    signal = signals.music_mix(16000, 2.0, seed=3)
    features, _ = nf.file_features(16000, signal.samples)
    assert features.min() >= 0.0


def test_the_committed_weights_are_small_float32_and_match_the_features() -> None:
    assert neural.WEIGHTS_FILE.stat().st_size < 2 * 1024 * 1024
    with np.load(neural.WEIGHTS_FILE, allow_pickle=False) as data:
        for key in data.files:
            if key not in ("meta", "dilations"):
                assert data[key].dtype == np.float32, key
    net = neural.default_net()
    assert net.n_features == nf.n_features()
    assert 10_000 <= net.n_parameters <= 100_000
    for key in ("command", "seed", "target_delay_frames", "unit", "attack_offset_hops"):
        assert key in net.meta, key
    # The calibration recorded with the weights is the one served.
    assert net.meta["unit"] == neural.UNIT and net.meta["attack_offset_hops"] == neural.ATTACK_OFFSET_HOPS
    assert net.meta["mask_ratio"] == neural.MASK_RATIO and net.meta["mask_ms"] == neural.MASK_MS
    assert [p.name for p in neural.WEIGHTS_FILE.parent.glob("*.npz")] == [neural.WEIGHTS_FILE.name]


@pytest.mark.parametrize(("frame_ms", "hop_ms", "bad"), [(40.0, 5.0, "hop_ms"), (23.0, 10.0, "frame_ms")])
def test_other_grids_are_refused_with_the_setting_named(frame_ms: float, hop_ms: float, bad: str) -> None:
    grid = nf.FrameGrid.from_seconds(44100, frame_ms / 1000.0, hop_ms / 1000.0)
    with pytest.raises(SettingsError) as caught:
        neural.constants(grid)
    assert caught.value.name == bad


@pytest.mark.parametrize("rate", (16000, 44100))
def test_streams_in_any_chunks_and_any_company_equal_one_call(rate: int) -> None:
    consts = neural.constants(nf.network_grid(rate))
    signal = signals.drums(rate, 2.0, seed=21)
    rows, _ = nf.file_rows(rate, signal.samples)
    [whole], [end_state] = neural.step_with(consts, [rows], [neural.initial_state_of(consts)])
    assert len(whole) == len(rows) and whole.dtype == np.float64
    rng = np.random.default_rng(rate)
    states = [neural.initial_state_of(consts) for _ in range(3)]
    first = states[0]
    got: list[list[np.ndarray]] = [[], [], []]
    positions = [0, 0, 0]
    while min(positions) < len(rows):
        chunks = []
        for k in range(3):
            size = (1, 2, int(rng.integers(0, 50)))[k]
            chunks.append(rows[positions[k] : positions[k] + size])
            positions[k] += size
        odfs, states = neural.step_with(consts, chunks, states)
        for k in range(3):
            got[k].append(odfs[k])
    for k in range(3):
        assert np.array_equal(np.concatenate(got[k]), whole)
        assert np.array_equal(states[k].past, end_state.past)
    assert first.past is None, "step returns new states and leaves the old ones as they were"


def f_measure(reference: np.ndarray, found: list[Onset]) -> float:
    f, _, _ = mir_eval.onset.f_measure(reference, np.array([o.time for o in found]), window=0.05)
    return float(f)


@pytest.mark.parametrize(
    "signal",
    [
        signals.clicks(44100, 4.0, seed=60),
        signals.drums(44100, 6.0, seed=61),
        signals.plucks(22050, 6.0, seed=62),
    ],
    ids=lambda s: s.name,
)
def test_the_committed_network_finds_onsets_at_the_default_settings(signal: signals.Signal) -> None:
    found = detect_onsets(signal.samples, signal.sample_rate, DetectorSettings(method="neural"))
    assert f_measure(signal.onsets_s, found) >= 0.9, [round(o.time, 3) for o in found]
    errors = [min(abs(o.time - t) for o in found) for t in signal.onsets_s]
    assert float(np.median(errors)) < 0.02, "onset times land near the attacks"


def test_silence_and_steady_noise_give_no_onset() -> None:
    assert (
        detect_onsets(np.zeros(44100 * 2, dtype=np.float32), 44100, DetectorSettings(method="neural")) == []
    )
    noise = signals.noise(44100, 3.0, seed=63)
    found = detect_onsets(noise.samples, 44100, DetectorSettings(method="neural"))
    assert len(found) <= 1, found  # at most the noise's own start


def test_the_look_ahead_includes_the_network_delay() -> None:
    detector = OnsetDetector(44100, settings=DetectorSettings(method="neural"))
    assert detector.plan.lookahead == 1  # 20 ms in all: one hop of the network, one of the picker
    assert detector.latency_s == pytest.approx(0.03, abs=1e-4)
    detector = OnsetDetector(44100, settings=DetectorSettings(method="neural", lookahead_ms=0.0))
    assert detector.plan.lookahead == 0 and detector.latency_s == pytest.approx(0.02, abs=1e-4)
    assert OnsetDetector(44100).latency_s == pytest.approx(0.01, abs=1e-4)  # superflux: look-ahead 0


def test_switching_to_neural_needs_its_grid_and_is_refused_cleanly() -> None:
    detector = OnsetDetector(44100, settings=DetectorSettings(hop_ms=5.0))
    with pytest.raises(SettingsError) as caught:
        detector.configure(DetectorSettings.from_mapping({"method": "neural"}, base=detector.settings))
    assert caught.value.name == "hop_ms"


def test_serving_never_imports_the_training_framework() -> None:
    code = (
        "import sys, numpy as np\n"
        "from server.dsp import DetectorSettings, detect_onsets\n"
        "detect_onsets(np.zeros(44100, np.float32), 44100, DetectorSettings(method='neural'))\n"
        "assert 'torch' not in sys.modules and 'train' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_process_many_and_pickling_mid_stream_equal_the_whole_file() -> None:
    settings = DetectorSettings(method="neural", threshold=0.7)
    clips = [signals.drums(44100, 3.0, seed=64), signals.plucks(16000, 3.0, seed=65)]
    whole = []
    for clip in clips:
        detector = OnsetDetector(clip.sample_rate, settings=settings)
        found = detector.process(clip.samples)
        odf = detector.take_odf()
        found += detector.flush()
        whole.append((found, np.concatenate([odf, detector.take_odf()])))
        assert len(found) >= 5
    # Two neural streams and a superflux one in lockstep, each in its own block size, through process_many;
    # every detector is pickled and restored halfway.
    detectors = [OnsetDetector(clip.sample_rate, settings=settings) for clip in clips]
    other = OnsetDetector(16000)
    sizes = [441, 1234]
    got: list[list[Onset]] = [[], []]
    odfs: list[list[np.ndarray]] = [[], []]
    for step in range(400):
        pairs = []
        for k, clip in enumerate(clips):
            pairs.append((detectors[k], clip.samples[step * sizes[k] : (step + 1) * sizes[k]]))
        pairs.append((other, clips[1].samples[step * 160 : (step + 1) * 160]))
        for k, found in enumerate(process_many(pairs)[:2]):
            got[k] += found
            odfs[k].append(detectors[k].take_odf())
        if step == 40:
            detectors = [pickle.loads(pickle.dumps(d)) for d in detectors]
    for k in range(2):
        got[k] += detectors[k].flush()
        odfs[k].append(detectors[k].take_odf())
        assert got[k] == whole[k][0]
        assert np.array_equal(np.concatenate(odfs[k]), whole[k][1])


def test_the_forward_mask_is_the_method_rows_and_is_block_size_invariant_across_a_switch() -> None:
    """``neural``'s picker masks weaker peaks after strong ones (its row's ``mask_ratio`` and ``mask_ms``); a
    stream that switches to it mid-stream and back, and is pickled on the way, gives the same onsets
    whatever the block size."""
    row = METHOD_TABLE["neural"]
    assert row.mask_ratio == neural.MASK_RATIO > 0 and row.mask_ms == neural.MASK_MS > 0
    plan = OnsetDetector(44100, settings=DetectorSettings(method="neural")).plan
    assert plan.mask_ratio == neural.MASK_RATIO and plan.mask_decay == mask_decay(neural.MASK_MS / 10.0)
    assert OnsetDetector(44100).plan.mask_decay == 0.0, "superflux has no mask"
    clip = signals.drums(44100, 4.0, seed=66)
    unmasked = dataclasses.replace(row, mask_ratio=0.0)
    settings = DetectorSettings(method="neural", threshold=0.5)
    with_mask = detect_onsets(clip.samples, 44100, settings)
    bare = OnsetDetector(44100, settings=settings, methods={"neural": unmasked})
    without = bare.process(clip.samples) + bare.flush()
    times = {o.time for o in with_mask}
    assert times < {o.time for o in without}, "the mask only removes onsets, and removes some here"
    switches = {44100: settings, 2 * 44100: DetectorSettings(), 3 * 44100: settings}  # block boundaries
    results = []
    for block, table in ((441, None), (1470, None), (2205, None), (44100, None), (1470, unmasked)):
        methods = None if table is None else {"superflux": METHOD_TABLE["superflux"], "neural": table}
        detector = OnsetDetector(44100, methods=methods)
        found = []
        for start in range(0, len(clip.samples), block):
            if start in switches:
                detector.configure(switches[start])
                if table is None:  # a pickled detector keeps only its own row of another table
                    detector = pickle.loads(pickle.dumps(detector))
            found += detector.process(clip.samples[start : start + block])
        results.append(found + detector.flush())
    assert all(r == results[0] for r in results[1:4])
    assert any(o.time > 3.1 for o in results[0])
    # The mask works after the switches too: without it, the same stream gives these onsets and more.
    assert {o.time for o in results[0]} < {o.time for o in results[4]}
