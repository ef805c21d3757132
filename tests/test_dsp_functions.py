"""The pure functions under the detector: framing, spectra, filterbank, ODFs and peak picking."""

from __future__ import annotations

import numpy as np
import pytest

from server.dsp import METHODS
from server.dsp import odf as odf_mod
from server.dsp.filterbank import apply_filterbank, log_filterbank
from server.dsp.peaks import merge_close, pick_peaks
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
    for method in METHODS:
        feats = odf_mod.features(method, whole, bank, grid.bin_hz)
        floor = odf_mod.compression_floor(method, odf_mod.frame_peaks(method, feats[2:]))
        full = odf_mod.odf(method, feats, 2, 1.0, floor)
        for start in (0, 7, 20):
            part = odf_mod.odf(method, feats[start : start + 6], 2, 1.0, floor[start : start + 4])
            assert np.array_equal(part, full[start : start + 4]), method


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


def test_running_max_matches_naive() -> None:
    rng = np.random.default_rng(81)
    for width in (1, 4, 30):
        for n in (0, 1, 3, width, width + 5):
            past = rng.random(width).astype(np.float32)
            new = rng.random(n).astype(np.float32)
            joined = np.concatenate([past, new])
            naive = np.array([joined[i : i + width + 1].max() for i in range(n)], dtype=np.float32)
            assert np.array_equal(odf_mod.running_max(past, new), naive)


def test_pick_peaks_rules() -> None:
    odf = np.zeros(40)
    odf[15] = 5.0  # clear peak
    odf[16] = 4.0  # its shoulder: not a maximum
    odf[25] = 0.5  # below threshold
    odf[33] = 3.0  # a peak that needs 3 frames of look-ahead to be certain
    levels = np.ones(40)
    common = {"pre_max": 3, "pre_avg": 10, "delta": 1.0, "min_power": 1e-6}
    assert list(pick_peaks(odf, levels, first=10, lookahead=3, **common)) == [15, 33]
    assert list(pick_peaks(odf[:35], levels[:35], first=10, lookahead=3, **common)) == [15]
    quiet = levels.copy()
    quiet[15] = 1e-8
    assert list(pick_peaks(odf, quiet, first=10, lookahead=3, **common)) == [33]
    with pytest.raises(ValueError, match="past context"):
        pick_peaks(odf, levels, first=2, lookahead=3, **common)


def test_merge_close_keeps_first_of_close_onsets() -> None:
    kept, last = merge_close([1.0, 1.02, 1.04, 1.2], last_s=0.98, min_interval_s=0.03)
    assert kept == [1, 3] and last == 1.2
