"""The learned onset detector's serving side: features, the committed network, and the method's contract."""

from __future__ import annotations

import numpy as np
import pytest

from server.dsp import neural_features as nf
from server.dsp.neural import WEIGHTS_FILE, analyse_many, default_net, new_state
from tests import signals

RATES = (8000, 16000, 22050, 44100, 48000, 96000)


@pytest.mark.parametrize("rate", RATES)
def test_every_rate_gives_the_same_bands_in_hz(rate: int) -> None:
    plan = nf.feature_plan(rate)
    assert plan.n_log == nf.n_bands(nf.SHORT_BANDS_PER_OCTAVE) + nf.n_bands(nf.LONG_BANDS_PER_OCTAVE)
    assert plan.hop == round(nf.HOP_S * rate)
    pairs = (
        (plan.short_bank, plan.short, nf.SHORT_BANDS_PER_OCTAVE),
        (plan.long_bank, plan.long, nf.LONG_BANDS_PER_OCTAVE),
    )
    for bank, grid, per_octave in pairs:
        sums = np.asarray(bank.weights.sum(axis=1)).ravel()
        used = sums > 0
        assert np.allclose(sums[used], 1.0, atol=1e-5), "every band is a weighted mean"
        assert used[0], "the lowest band reads at least one bin"
        centres = nf.FMIN_HZ * 2.0 ** (np.arange(bank.n_bands) / per_octave)
        assert not used[centres > 0.96 * rate / 2].any(), "no band above Nyquist reads anything"
        assert bank.stop_bin <= grid.n_bins


def test_a_tone_lights_the_band_of_its_frequency() -> None:
    rate = 44100
    plan = nf.feature_plan(rate)
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    features, power = nf.file_features(plan, tone)
    short = features[: plan.short_bank.n_bands, 50]
    centre = int(np.argmax(short))
    expected = round(np.log2(1000.0 / nf.FMIN_HZ) * nf.SHORT_BANDS_PER_OCTAVE)
    assert abs(centre - expected) <= 1
    assert 10 * np.log10(power[50]) == pytest.approx(10 * np.log10(0.125), abs=0.1)  # 0.5 amplitude sine
    rise = features[plan.n_log :, 60:]
    assert rise.max() < 1e-3, "a steady tone does not rise"


def test_features_are_never_negative_and_silence_is_zero() -> None:
    plan = nf.feature_plan(16000)
    features, power = nf.file_features(plan, np.zeros(16000, dtype=np.float32))
    assert features.shape == (plan.n_features, (16000 + plan.tail_len - plan.long.frame_len) // plan.hop + 1)
    assert not features.any() and not power.any()
    signal = signals.music_mix(16000, 2.0, seed=3)
    features, _ = nf.file_features(plan, signal.samples)
    assert features.min() >= 0.0


def test_the_committed_weights_are_small_float32_and_match_the_features() -> None:
    assert WEIGHTS_FILE.stat().st_size < 2 * 1024 * 1024
    with np.load(WEIGHTS_FILE, allow_pickle=False) as data:
        for key in data.files:
            if key not in ("meta", "dilations"):
                assert data[key].dtype == np.float32, key
    net = default_net()
    assert net.n_features == nf.feature_plan(44100).n_features
    assert 10_000 <= net.n_parameters <= 100_000
    for key in ("command", "seed", "target_delay_frames", "unit", "attack_offset_hops"):
        assert key in net.meta, key


@pytest.mark.parametrize("rate", (16000, 44100))
def test_streams_in_any_blocks_and_any_company_equal_the_whole_file(rate: int) -> None:
    net = default_net()
    plan = nf.feature_plan(rate)
    signal = signals.drums(rate, 2.0, seed=21)
    [(whole, _)] = analyse_many(plan, net, [new_state(plan, net)], [signal.samples])
    assert len(whole) == (len(signal.samples) + plan.tail_len - plan.long.frame_len) // plan.hop + 1
    rng = np.random.default_rng(rate)
    states = [new_state(plan, net) for _ in range(3)]
    got: list[list[np.ndarray]] = [[], [], []]
    positions = [0, 0, 0]
    while min(positions) < len(signal.samples):
        blocks = []
        for k in range(3):
            size = (37, 441, int(rng.integers(0, 5000)))[k]
            blocks.append(signal.samples[positions[k] : positions[k] + size])
            positions[k] += size
        for k, (activation, _) in enumerate(analyse_many(plan, net, states, blocks)):
            got[k].append(activation)
    for k in range(3):
        assert np.array_equal(np.concatenate(got[k]), whole)
