"""The pure functions under the detector: framing, spectra, filterbank, ODFs and peak picking."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from server.dsp import odf as odf_mod
from server.dsp.attack import locate_attack
from server.dsp.filterbank import apply_filterbank, bands_of_columns, log_filterbank
from server.dsp.methods import METHOD_TABLE
from server.dsp.peaks import (
    mask_decay,
    mask_levels,
    merge_close,
    peak_shift,
    pick_peaks,
    window_mean,
    window_median,
)
from server.dsp.spectrum import FrameGrid, analysis_window, frame_power, frame_view, level_norm, spectrum


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 96000, 192000])
def test_grid_follows_seconds(rate: int) -> None:
    grid = FrameGrid.from_seconds(rate, 0.040, 0.010)
    assert grid.hop == round(0.010 * rate) and grid.frame_len == round(0.040 * rate)
    assert grid.fft_size >= grid.frame_len and grid.fft_size & (grid.fft_size - 1) == 0
    assert grid.fft_size < 2 * grid.frame_len


def test_frame_view_matches_slices() -> None:
    samples = np.arange(1000, dtype=np.float32)
    frames = frame_view(samples, 100, 30)
    assert frames.shape == ((1000 - 100) // 30 + 1, 100)
    for i in (0, 5, len(frames) - 1):
        assert np.array_equal(frames[i], samples[i * 30 : i * 30 + 100])
    assert frame_view(samples[:99], 100, 30).shape == (0, 100)


def test_every_row_is_independent_of_batching() -> None:
    """FFT, filterbank, features and ODF of a frame are bitwise the same whatever else is computed with it."""
    rng = np.random.default_rng(80)
    grid = FrameGrid.from_seconds(44100, 0.040, 0.010)
    window = analysis_window(grid.frame_len)
    bank = log_filterbank(44100, grid.fft_size)
    frames = (rng.standard_normal((40, grid.frame_len)) * 0.1).astype(np.float32)
    windowed = frames * window
    whole = spectrum(windowed, grid.fft_size)
    bands = apply_filterbank(np.abs(whole), bank)
    levels = frame_power(windowed, level_norm(window))
    for start, stop in [(0, 1), (3, 4), (5, 12), (17, 40)]:
        part = spectrum(windowed[start:stop], grid.fft_size)
        assert np.array_equal(part, whole[start:stop])
        assert np.array_equal(apply_filterbank(np.abs(part), bank), bands[start:stop])
        assert np.array_equal(frame_power(windowed[start:stop], level_norm(window)), levels[start:stop])
    for method in METHOD_TABLE.values():
        feats = method.features(whole, method.constants(grid))
        for start, stop in [(0, 1), (3, 4), (5, 12), (17, 40)]:
            part_feats = method.features(whole[start:stop], method.constants(grid))
            assert np.array_equal(part_feats, feats[start:stop]), method.name
        if method.stateful:
            continue  # its step's block-size invariance is tested through the detector
        assert method.lags is not None and method.compare is not None and method.peaks is not None
        floor = odf_mod.compression_floor(method.floor, method.peaks(feats[2:]))
        lags = method.lags(grid)
        full = odf_mod.odf(method.compare, lags, feats, 2, 1.0, floor)
        for start in (0, 7, 20):
            part = odf_mod.odf(
                method.compare, lags, feats[start : start + 6], 2, 1.0, floor[start : start + 4]
            )
            assert np.array_equal(part, full[start : start + 4]), method.name


@pytest.mark.parametrize("rate", [16000, 44100, 96000])
def test_filterbank_is_a_weighted_mean_in_hz(rate: int) -> None:
    grid = FrameGrid.from_seconds(rate, 0.040, 0.010)
    bank = log_filterbank(rate, grid.fft_size)
    flat = np.full((1, grid.n_bins), 0.25, dtype=np.float32)
    assert np.allclose(apply_filterbank(flat, bank), 0.25, rtol=1e-5)
    assert bank.stop_bin <= grid.n_bins and bank.first_bin * grid.bin_hz < 60.0
    # A sine lights the band around its frequency, whatever the rate.
    t = np.arange(grid.frame_len) / rate
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)[None, :]
    bands = apply_filterbank(np.abs(spectrum(sine * analysis_window(grid.frame_len), grid.fft_size)), bank)
    assert 0.2 < float(bands.max()) <= 1.0


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    window = analysis_window(1764)
    sine = np.sin(2 * np.pi * 441.0 * np.arange(1764) / 44100).astype(np.float32)[None, :]
    power = frame_power(sine * window, level_norm(window))[0]
    assert 10 * np.log10(power) == pytest.approx(-3.01, abs=0.05)


@pytest.mark.parametrize(("rate", "frame_s"), [(8000, 0.04), (44100, 0.04), (48000, 0.04), (96000, 0.1)])
def test_fft_and_filterbank_rows_do_not_depend_on_the_batch(rate: int, frame_s: float) -> None:
    """pocketfft batches rows (SIMD across them) and the filterbank's sparse product is vectorised across
    frames: each frame's result must still be bitwise the same in a batch of any size and position."""
    rng = np.random.default_rng(rate)
    grid = FrameGrid.from_seconds(rate, frame_s, 0.010)
    bank = log_filterbank(rate, grid.fft_size)
    frames = (rng.standard_normal((50, grid.frame_len)) * rng.choice([1e-4, 0.1, 1.0], (50, 1))).astype(
        np.float32
    )
    windowed = frames * analysis_window(grid.frame_len)
    alone = [spectrum(windowed[i : i + 1], grid.fft_size) for i in range(len(frames))]
    bands_alone = [apply_filterbank(np.abs(part), bank) for part in alone]
    for size in (2, 3, 4, 5, 7, 8, 9, 16, 33, 48, 49, 50):
        start = int(rng.integers(0, len(frames) - size + 1))
        batch = spectrum(windowed[start : start + size], grid.fft_size)
        bands = apply_filterbank(np.abs(batch), bank)
        for k in range(size):
            assert np.array_equal(batch[k : k + 1], alone[start + k]), (size, k)
            assert np.array_equal(bands[k : k + 1], bands_alone[start + k]), (size, k)
    magnitude = np.abs(spectrum(windowed, grid.fft_size))[:, bank.first_bin : bank.stop_bin]
    columns = np.ascontiguousarray(magnitude.T)
    assert np.array_equal(bands_of_columns(columns, bank), np.concatenate(bands_alone))


def test_compression_floors_follow_the_recent_maximum() -> None:
    rng = np.random.default_rng(81)
    for width in (1, 4, 30):
        values = rng.random(300).astype(np.float32).tolist()
        values[100:160] = sorted(values[100:160], reverse=True)  # a long decreasing run
        window: collections.deque[tuple[int, float]] = collections.deque()
        got: list[float] = []
        for start in range(0, 300, 7):  # in pieces, as blocks bring them
            got += odf_mod.compression_floors(window, start, values[start : start + 7], width, 1.0, 0.0)
            assert len(window) <= width + 1
        assert got == [max(values[max(0, i - width) : i + 1]) for i in range(300)]


def test_compression_floors_are_the_float32_compression_floor() -> None:
    """Floors computed in Python floats and rounded to float32 later have the float32 computation's bits."""
    rng = np.random.default_rng(82)
    for method in METHOD_TABLE.values():
        peaks = (rng.random(500) * rng.choice([1e-9, 1e-3, 1.0, 1e3], 500)).astype(np.float32)
        scale, low = method.floor
        window: collections.deque[tuple[int, float]] = collections.deque()
        floors = odf_mod.compression_floors(window, 0, peaks.tolist(), 200, float(scale), float(low))
        recent = np.array([peaks[max(0, i - 200) : i + 1].max() for i in range(len(peaks))], dtype=np.float32)
        expected = odf_mod.compression_floor(method.floor, recent)[:, 0]
        assert np.array_equal(np.array(floors, dtype=np.float32), expected), method.name


def pick_peaks_reference(odf: np.ndarray, power: np.ndarray, first: int, stop: int, **k: float) -> list[int]:
    """The peak-picking rule written with numpy slices and maxima, as a second opinion."""
    pre_max, lookahead, pre_avg = int(k["pre_max"]), int(k["lookahead"]), int(k["pre_avg"])

    def candidate(i: int) -> bool:
        window_max = odf[i - pre_max : i + lookahead + 1].max()
        window = odf[i - pre_avg : i + 1]
        level = float(np.median(window)) if k.get("median") else float(np.mean(window))
        above_mean = odf[i] >= k["mean_factor"] * level + k["threshold"]
        return bool(odf[i] >= window_max and above_mean and odf[i] > 0 and power[i] >= k["min_power"])

    def picked(i: int) -> bool:
        mask = k.get("mask", ())
        return not (len(mask) > 0 and not odf[i] >= mask[i - first])

    context = max(pre_max, pre_avg)
    return [i for i in range(first, stop)
            if candidate(i) and picked(i) and not (k.get("rise_once") and i > context and candidate(i - 1))]


def test_pick_peaks_rules() -> None:
    odf = [0.0] * 40
    odf[15] = 5.0  # clear peak
    odf[16] = 4.0  # its shoulder: not a maximum
    odf[25] = 0.5  # below threshold
    odf[33] = 3.0  # a peak that needs 3 frames of look-ahead to be certain
    levels = [1.0] * 40
    common = {"pre_max": 3, "pre_avg": 10, "threshold": 1.0, "min_power": 1e-6, "lookahead": 3}
    assert pick_peaks(odf, levels, first=10, stop=37, **common) == [15, 33]
    assert pick_peaks(odf[:35], levels[:35], first=10, stop=32, **common) == [15]
    quiet = levels.copy()
    quiet[15] = 1e-8
    assert pick_peaks(odf, quiet, first=10, stop=37, **common) == [33]
    padded = odf[:34] + [-np.inf] * 3  # end of stream: the look-ahead runs into -inf padding
    assert pick_peaks(padded, levels, first=10, stop=34, **common) == [15, 33]
    with pytest.raises(ValueError, match="past context"):
        pick_peaks(odf, levels, first=2, stop=37, **common)


def test_pick_peaks_matches_reference_rule_on_random_odfs() -> None:
    rng = np.random.default_rng(83)
    for trial in range(200):
        n = int(rng.integers(20, 120))
        odf = np.maximum(rng.standard_normal(n) * rng.choice([0.5, 2.0]), 0.0)
        odf[rng.random(n) < 0.1] = 0.0
        power = rng.random(n) * 1e-3
        k = {
            "pre_max": int(rng.integers(1, 5)),
            "lookahead": int(rng.integers(0, 5)),
            "pre_avg": int(rng.integers(1, 12)),
            "threshold": float(rng.choice([0.0, 0.5, 1.0])),
            "min_power": float(rng.choice([0.0, 2e-4])),
            "mean_factor": float(rng.choice([1.0, 1.5])),
        }
        first = max(k["pre_max"], k["pre_avg"])
        stop = n - k["lookahead"]
        median, rise_once = bool(trial % 2), bool(trial % 3 == 0)
        ratio, decay = float(rng.choice([0.0, 0.5, 1.0])), mask_decay(float(rng.choice([2.0, 5.0, 40.0])))
        mask = [] if ratio == 0.0 else [ratio * m for m in mask_levels(odf.tolist(), first, stop, 0.0, decay)]
        baseline = window_median if median else window_mean
        got = pick_peaks(odf.tolist(), power.tolist(), first=first, stop=stop, baseline=baseline,
                         rise_once=rise_once, mask=mask, **k)
        expected = pick_peaks_reference(odf, power, first, stop, median=median, rise_once=rise_once,
                                        mask=mask, **k)
        assert got == expected, trial


def test_without_lookahead_a_long_rise_is_one_onset() -> None:
    # A rise over five frames passes the maximum test at each of them without look-ahead; the minimum
    # interval would merge only those within it.
    odf = [0.0] * 12 + [2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0]
    levels = [1.0] * len(odf)
    common = {"pre_max": 3, "pre_avg": 10, "threshold": 1.0, "min_power": 1e-6, "lookahead": 0}
    assert pick_peaks(odf, levels, first=10, stop=len(odf), **common) == [12, 13, 14, 15, 16, 21]
    assert pick_peaks(odf, levels, first=10, stop=len(odf), rise_once=True, **common) == [12, 21]
    assert pick_peaks(odf, levels, first=13, stop=len(odf), rise_once=True, **common) == [21]
    # The frame before is judged only when its own past is there (the detector keeps one more frame).
    assert pick_peaks(odf[2:], levels[2:], first=10, stop=len(odf) - 2, rise_once=True, **common) == [10, 19]


def test_locate_attack_finds_a_click_in_noise_to_the_block() -> None:
    rng = np.random.default_rng(5)
    frame = (rng.standard_normal(1920) * 1e-3).astype(np.float32)
    for at in (1000, 1500, 1877, 1919):
        window = frame.copy()
        window[at : at + 16] += 0.8
        found = locate_attack(window, 940, 1920, 48, 5)
        assert abs(found - at) <= 24, at  # the centre of the 48-sample block that holds the click's start
    # A step in a tone: the high-passed energy jumps where it starts.
    t = np.arange(1920) / 48000
    tone = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[1300:] += (0.5 * np.sin(2 * np.pi * 3000 * t[1300:])).astype(np.float32)
    assert abs(locate_attack(tone, 940, 1920, 48, 5) - 1300) <= 24
    # Digital silence before the attack is a finite rise; no room for a block gives the stop.
    silent = np.zeros(1920, dtype=np.float32)
    silent[1700:] = 0.3
    assert abs(locate_attack(silent, 940, 1920, 48, 5) - 1700) <= 24
    assert locate_attack(silent, 0, 200, 48, 5) == 200


def test_a_median_baseline_ignores_one_loud_frame_and_follows_a_steady_level() -> None:
    loud_then_soft = [0.0] * 12 + [20.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0]
    levels = [1.0] * len(loud_then_soft)
    common = {"pre_max": 2, "pre_avg": 10, "threshold": 1.0, "min_power": 1e-6, "lookahead": 2}
    assert pick_peaks(loud_then_soft, levels, first=10, stop=17, **common) == [12]  # mean 2.0: 2.5 < 3
    assert pick_peaks(loud_then_soft, levels, first=10, stop=17, baseline=window_median, **common) == [12, 15]
    steady = [2.0] * 16 + [2.9, 2.0, 2.0]
    assert pick_peaks(steady, levels, first=10, stop=17, baseline=window_median, **common) == []
    assert window_median([3.0, 1.0, 2.0, 10.0]) == 2.5 and window_mean([1.0, 2.0]) == 1.5


def test_mask_levels_are_every_earlier_value_decayed_by_its_age_in_any_pieces() -> None:
    rng = np.random.default_rng(84)
    odf = (rng.random(400) * rng.choice([0.1, 5.0], 400)).tolist()
    decay = mask_decay(80.0)
    assert decay == pytest.approx(np.exp(-1 / 80)) and mask_decay(0.0) == 0.0
    levels = mask_levels(odf, 0, 400, 0.0, decay)
    assert len(levels) == 401 and levels[0] == 0.0
    direct = [max([odf[i - k] * decay**k for k in range(1, i + 1)], default=0.0) for i in range(401)]
    assert np.allclose(levels, direct, rtol=1e-12, atol=0.0)
    # Carried in pieces (blocks of frames), the levels are bitwise the same.
    pieces, level, start = [0.0], 0.0, 0
    while start < 400:
        stop = min(400, start + int(rng.integers(1, 30)))
        part = mask_levels(odf, start, stop, level, decay)
        pieces += part[1:]
        level, start = part[-1], stop
    assert pieces == levels


def test_a_forward_mask_holds_back_a_weaker_peak_after_a_strong_one_but_not_an_equal_one() -> None:
    odf = [0.0] * 300
    odf[20] = 10.0  # a strong onset
    odf[60] = 3.0  # 400 ms later at 10 ms hops: needs 0.6 * 10 * exp(-40 / 80) = 3.64
    odf[100] = 9.0  # as strong as the first, decayed: passes
    odf[290] = 1.5  # 2.7 s after the strong one: 0.6 * 9 * exp(-190 / 80) = 0.5
    levels = [1.0] * 300
    common = {"pre_max": 3, "pre_avg": 10, "threshold": 1.0, "min_power": 1e-6, "lookahead": 1}

    def masked(first: int, stop: int) -> list[float]:
        return [0.6 * m for m in mask_levels(odf, first, stop, 0.0, mask_decay(80.0))[:-1]]

    assert pick_peaks(odf, levels, first=10, stop=299, **common) == [20, 60, 100, 290]
    assert pick_peaks(odf, levels, first=10, stop=299, mask=masked(10, 299), **common) == [20, 100, 290]
    odf[60] = 3.7
    assert pick_peaks(odf, levels, first=10, stop=299, mask=masked(10, 299), **common) == [20, 60, 100, 290]


def test_peak_shift_is_a_parabola_vertex() -> None:
    odf = [0.0, 1.0, 3.0, 2.0, 0.0, -np.inf]
    # Parabola through (1, 1), (2, 3), (3, 2): vertex at 2 + 0.5 * (1 - 2) / (1 - 6 + 2) = 2 + 1/6.
    assert peak_shift(odf, 2) == pytest.approx(1 / 6)
    assert peak_shift(odf, 0) == 0.0 and peak_shift(odf, 4) == 0.0  # edge, and -inf neighbour


def test_merge_close_keeps_first_of_close_onsets() -> None:
    kept, last = merge_close([1.0, 1.02, 1.04, 1.2], last_s=0.98, min_interval_s=0.03)
    assert kept == [1, 3] and last == 1.2
