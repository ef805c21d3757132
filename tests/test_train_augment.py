"""The training's band-domain recording chain (train/augment.py) against real signals through the features.

Each augmentation should give what the server's features give for the real signal it stands for.
"""

from __future__ import annotations

import numpy as np

from server.dsp import neural_features as nf
from train import augment

RATE = 48000


def rows_of(samples: np.ndarray) -> np.ndarray:
    return nf.file_rows(RATE, samples.astype(np.float32))[0][10:]  # steady frames only


def tone(seconds: float, hz: float, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(RATE * seconds)) / RATE)


def test_a_dc_offset_in_the_band_domain_is_what_the_features_of_a_real_offset_give() -> None:
    sine = tone(2.0, 1000.0, 0.5)
    offset = 0.05
    real = augment.linear(rows_of(sine + offset))
    dry = augment.linear(rows_of(sine))
    peak = augment.frame_level(dry).max()
    dc_db = -20.0 * np.log10(offset / peak)
    made = augment.low_end(dry, np.random.default_rng(0), dc_db, None)
    assert np.abs(made[:, :60] - real[:, :60]).max() < 1e-3 * real.max()
    assert real[:, 0].mean() > 10 * dry[:, 0].mean(), "the offset must show in the lowest band"


def test_noise_in_the_band_domain_matches_real_noise_band_by_band_on_average() -> None:
    rng = np.random.default_rng(1)
    sine = tone(20.0, 440.0, 0.3)
    white = rng.standard_normal(len(sine)) * 0.01
    real = augment.linear(rows_of(sine + white))
    dry = augment.linear(rows_of(sine))
    made = augment.noise(dry, rng, 0.0, 0.0)  # scaled next: only the shape and fluctuation are compared
    extra = np.sqrt(np.maximum(made**2 - dry**2, 0.0))
    wanted = np.sqrt(np.maximum(real**2 - dry**2, 0.0))
    far = np.abs(nf.FMIN_HZ * 2.0 ** (np.arange(real.shape[1]) / 12.0) - 440.0) > 200.0
    extra *= wanted[:, far].mean() / extra[:, far].mean()
    ratio = extra.mean(axis=0)[far] / wanted.mean(axis=0)[far]
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio.round(2)
    # The frame-to-frame fluctuation of each band is the real noise's (its spread over frames).
    spread = extra.std(axis=0)[far] / extra.mean(axis=0)[far]
    real_spread = wanted.std(axis=0)[far] / wanted.mean(axis=0)[far]
    assert np.all(np.abs(spread / real_spread - 1.0) < 0.3)


def test_noise_sits_at_the_level_asked_for_below_the_loudest_frame() -> None:
    dry = augment.linear(rows_of(tone(3.0, 1000.0, 0.5)))
    silent = np.zeros_like(dry)
    silent[5] = dry[5]  # one loud frame
    made = augment.noise(silent, np.random.default_rng(2), 30.0, 1.0)
    level = augment.frame_level(made)
    others = np.delete(level, 5)
    assert abs(20 * np.log10(others.mean() / level[5]) + 30.0) < 1.0


def test_a_room_tail_decays_at_its_rt60_and_starts_after_the_sound() -> None:
    frames, bands = 300, 104
    burst = np.zeros((frames, bands))
    burst[50] = 1.0
    made = augment.room_tail(burst, np.random.default_rng(3), rt60_s=1.0, wet_db=-6.0, darkening=0.0)
    tail_power = made**2 - burst**2
    assert np.all(tail_power[:51] == 0.0), "nothing before or at the sound itself"
    mean_db = 10 * np.log10(tail_power[51:150].mean(axis=1))  # the kernel stops at -60 dB
    slope_db_per_s = np.polyfit(np.arange(len(mean_db)) * nf.HOP_S, mean_db, 1)[0]
    assert abs(slope_db_per_s + 60.0) < 3.0
    # A steady sound's tail has the wet level asked for (power relative to the dry power).
    steady = np.ones((frames, bands))
    made = augment.room_tail(steady, np.random.default_rng(3), rt60_s=0.5, wet_db=-6.0, darkening=0.0)
    wet_db = 10 * np.log10((made[150:] ** 2 - 1.0).mean())
    assert abs(wet_db + 6.0) < 0.5
    # Darkening shortens the top band's decay.
    dark = augment.room_tail(burst, np.random.default_rng(3), rt60_s=1.0, wet_db=-6.0, darkening=1.0)
    assert (dark[100:, -10:] ** 2 - 1e-30).mean() < 0.1 * (dark[100:, :10] ** 2).mean()


def test_the_compressor_reduces_loud_frames_by_its_ratio_and_releases_exponentially() -> None:
    frames = 200
    level = np.full(frames, 0.01)
    level[50:60] = 1.0  # 40 dB louder
    bands = np.repeat(level[:, None], 8, axis=1)
    made = augment.compress(bands, threshold_db=-20.0, ratio=4.0, release_s=0.1)
    gain_db = 20 * np.log10(made[:, 0] / bands[:, 0])
    assert np.all(gain_db[:50] == 0.0)
    assert abs(gain_db[55] + 20.0 * (1 - 1 / 4)) < 1e-9  # 20 dB over the threshold, ratio 4: -15 dB
    after = gain_db[60:70]
    assert np.all(np.diff(after) > 0.0), "the gain comes back up after the hit"
    assert abs(after[1] / after[0] - np.exp(-nf.HOP_S / 0.1)) < 1e-9


def test_the_recording_chain_is_seeded_keeps_dead_bands_and_leaves_silence_alone() -> None:
    rng = np.random.default_rng(4)
    rows = np.zeros((400, 104), dtype=np.float32)
    rows[:, :80] = rng.uniform(0.0, 2.0, (400, 80)).astype(np.float32)  # bands 80+ above Nyquist
    outputs = [augment.recording(rows, np.random.default_rng(9)) for _ in range(2)]
    assert np.array_equal(outputs[0], outputs[1])
    changed = [augment.recording(rows, np.random.default_rng(seed)) for seed in range(20)]
    assert all(np.all(out[:, 80:] == 0.0) for out in changed)
    assert sum(not np.array_equal(out, rows) for out in changed) >= 15
    assert all(out.dtype == np.float32 and np.isfinite(out).all() for out in changed)
    silent = np.zeros((400, 104), dtype=np.float32)
    assert np.array_equal(augment.recording(silent, np.random.default_rng(9)), silent)
