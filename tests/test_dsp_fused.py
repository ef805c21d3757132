"""The fused method: the network's activation and SuperFlux, summed frame by frame (server/dsp/fused.py)."""

from __future__ import annotations

import pickle

import mir_eval
import numpy as np
import pytest

from server.dsp import (
    DetectorSettings,
    Onset,
    OnsetDetector,
    detect_onsets,
    fused,
    neural,
    odf,
    process_many,
)
from server.dsp.methods import METHOD_TABLE
from server.dsp.peaks import mask_levels
from server.exceptions import SettingsError
from testkit import signals

FUSED = DetectorSettings(method="fused")


def times(found: list[Onset]) -> np.ndarray:
    return np.array([o.time for o in found])


def streamed_odf(
    samples: np.ndarray, rate: int, method: str, block: int = 441
) -> tuple[np.ndarray, np.ndarray]:
    """A method's detection function of a stream, and each frame's log-filterbank bands."""
    detector = OnsetDetector(rate, settings=DetectorSettings(method=method))
    detector.tap_rows()
    values, rows = [], []
    for start in range(0, len(samples), block):
        detector.process(samples[start : start + block])
        values.append(detector.take_odf())
        rows += detector.take_rows()
    return np.concatenate(values).astype(np.float64), np.concatenate(rows)


def held_superflux(rows: np.ndarray, hold: np.float32, floor_frames: int) -> np.ndarray:
    """SuperFlux of each row against the decaying hold of the earlier ones, from its definition."""
    filtered = odf.max_filter_bands(rows)
    reference = np.zeros_like(rows)
    for t in range(1, len(rows)):
        reference[t] = np.maximum(filtered[t - 1], reference[t - 1] * hold)
    peaks = rows.max(axis=1)
    scale, low = odf.amplitude_floor()
    recent = np.array([peaks[max(0, i - floor_frames) : i + 1].max() for i in range(len(peaks))])
    floor = np.maximum(recent * scale, low).astype(np.float32)[:, None]
    return odf.log_rise(rows, reference, floor).mean(axis=1, dtype=np.float64) / fused.SUPERFLUX_UNIT


def test_its_odf_is_the_weighted_sum_of_the_neural_and_a_held_superflux() -> None:
    """The network's term is the ``neural`` method's detection function, gated by level and masked; the
    SuperFlux term is the ``superflux`` method's on the same rows but against a decaying hold of the
    earlier rows (never more than the method's own, and less after a level held a few hops before)."""
    assert METHOD_TABLE["superflux"].unit == fused.SUPERFLUX_UNIT
    # A mix, then its tail faded out by 60 dB over two seconds, then silence.
    clip = signals.music_mix(44100, 5.0, seed=90)
    fade = np.concatenate([np.ones(3 * 44100), np.geomspace(1.0, 1e-3, 2 * 44100)]).astype(np.float32)
    samples = np.concatenate([clip.samples * fade[: len(clip.samples)], np.zeros(44100, np.float32)])
    got, _ = streamed_odf(samples, 44100, "fused")
    net, _ = streamed_odf(samples, 44100, "neural")
    plain, rows = streamed_odf(samples, 44100, "superflux")
    assert len(got) == len(net) == len(plain) == len(rows) > 500
    consts = fused.constants(OnsetDetector(44100, settings=FUSED).plan.frames.grid)
    assert 0 < consts.hold < 1
    flux = held_superflux(rows, consts.hold, consts.floor_frames)
    assert np.allclose(held_superflux(rows, np.float32(0.0), consts.floor_frames), plain, atol=1e-5)
    assert np.all(flux <= plain + 1e-5) and (flux < plain - 0.05).sum() > 20
    peaks = rows.max(axis=1).astype(np.float64)
    recent = [max(peaks[max(0, i - consts.floor_frames) : i + 1]) for i in range(len(peaks))]
    gated = net * (peaks >= np.array(recent) * 10.0 ** (-fused.GATE_DB / 20.0))
    closed = np.flatnonzero(gated != net)
    assert len(closed) > 50 and closed.min() > 300, "the gate shuts frames of the fading tail only"
    levels = np.array(mask_levels(gated.tolist(), 0, len(net), 0.0, consts.mask_decay)[:-1])
    masked = gated * (gated >= fused.NET_MASK_RATIO * levels)
    assert (masked == 0).sum() > (gated == 0).sum() + 100, "the mask zeroes more of the network's frames"
    expected = (fused.NEURAL_WEIGHT * masked + (1.0 - fused.NEURAL_WEIGHT) * flux) / fused.UNIT
    # take_odf gives float32: the terms agree to its rounding.
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate", [16000, 44100, 96000])
def test_clicks_are_found_and_placed(rate: int) -> None:
    clip = signals.clicks(rate, 4.0, seed=91)
    found = times(detect_onsets(clip.samples, rate, FUSED))
    assert len(found) == len(clip.onsets_s), found
    assert np.max(np.abs(found - clip.onsets_s)) <= 0.005


def test_silence_and_a_dc_step_give_nothing() -> None:
    """Silence and a constant offset give nothing; a step in the offset gives its edge (a click: every
    method reports it) and nothing in the two seconds of constant offset after it."""
    rate = 44100
    assert detect_onsets(np.zeros(3 * rate, dtype=np.float32), rate, FUSED) == []
    assert detect_onsets(np.full(3 * rate, 0.5, dtype=np.float32), rate, FUSED) == []
    step = np.zeros(3 * rate, dtype=np.float32)
    step[rate:] = 0.5
    assert [round(o.time, 2) for o in detect_onsets(step, rate, FUSED)] == [1.0]


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 2), (48000, 6), (192000, 1)])
def test_every_rate_and_channel_count(rate: int, channels: int) -> None:
    clip = signals.drums(rate, 4.0, seed=92)
    samples = np.repeat(clip.samples[:, None], channels, axis=1) if channels > 1 else clip.samples
    found = detect_onsets(samples, rate, FUSED)
    f, _, _ = mir_eval.onset.f_measure(clip.onsets_s, times(found), window=0.05)
    assert f >= 0.9, (rate, channels, f)


def test_the_grid_is_the_networks_and_the_latency_includes_its_delay() -> None:
    with pytest.raises(SettingsError) as caught:
        DetectorSettings(method="fused", hop_ms=5.0)
    assert caught.value.name == "hop_ms"
    detector = OnsetDetector(44100, settings=FUSED)
    assert detector.plan.lookahead == 1 and detector.latency_s == pytest.approx(0.03, abs=1e-4)
    row = METHOD_TABLE["fused"]
    assert row.delay_frames == METHOD_TABLE["neural"].delay_frames and row.grid_ms == (40.0, 10.0)
    assert METHOD_TABLE["neural"].unit == neural.UNIT and row.unit == fused.UNIT


def test_process_many_pickling_and_a_live_threshold_change_equal_one_by_one() -> None:
    clips = [signals.drums(44100, 3.0, seed=93), signals.plucks(16000, 3.0, seed=94)]
    sizes = [441, 1234]
    # Each stream halfway through switches threshold (0.7 -> 1.5): the same in lockstep through
    # process_many (with a superflux stream beside them and every detector pickled on the way) as alone.
    high = DetectorSettings(method="fused", threshold=1.5)

    def run(lockstep: bool) -> list[list[Onset]]:
        detectors = [OnsetDetector(c.sample_rate, settings=DetectorSettings(method="fused", threshold=0.7))
                     for c in clips]
        other = OnsetDetector(16000)
        got: list[list[Onset]] = [[], []]
        for step in range(400):
            if step == 150:
                for d in detectors:
                    d.configure(high)
            pairs = [(detectors[k], c.samples[step * sizes[k] : (step + 1) * sizes[k]])
                     for k, c in enumerate(clips)]
            if lockstep:
                pairs.append((other, clips[1].samples[step * 160 : (step + 1) * 160]))
                results = process_many(pairs)[:2]
            else:
                results = [d.process(b) for d, b in pairs]
            for k, found in enumerate(results):
                got[k] += found
            if lockstep and step == 40:
                detectors = [pickle.loads(pickle.dumps(d)) for d in detectors]
        return [g + d.flush() for g, d in zip(got, detectors, strict=True)]

    alone, together = run(False), run(True)
    assert together == alone
    for k, clip in enumerate(clips):
        cut = 150 * sizes[k] / clip.sample_rate
        assert len([o for o in alone[k] if o.time < cut]) >= 3
        # After the change only onsets strong enough for the higher threshold come.
        assert all(o.strength >= 1.5 for o in alone[k] if o.time > cut + 0.05)
