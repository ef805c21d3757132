"""The detector's row tap (OnsetDetector.tap_rows / take_rows): its log-filterbank rows, one per detection
function value, equal to the filterbank of frames computed apart, whatever the block size, the batch and
the method."""

from __future__ import annotations

import numpy as np
import pytest

from server.dsp import DetectorSettings, OnsetDetector, process_many
from server.dsp.odf import band_magnitudes
from server.dsp.spectrum import analysis_window, frame_view, spectrum
from server.rhythm.features import grid_for
from testkit.rhythm_signals import beat_times, drum_track

RATE = 44100


def audio() -> np.ndarray:
    return drum_track(beat_times([(120, 3.0)]), seed=51).audio


def tapped(samples: np.ndarray, block: int) -> tuple[np.ndarray, int]:
    detector = OnsetDetector(RATE, 1)
    detector.tap_rows()
    rows: list[np.ndarray] = []
    values = 0
    for start in range(0, len(samples), block):
        detector.process(samples[start : start + block])
        values += len(detector.take_odf())
        rows += detector.take_rows()
    return np.concatenate(rows), values


def test_rows_are_the_filterbank_of_the_frames() -> None:
    samples = audio()
    rows, values = tapped(samples, 882)
    assert len(rows) == values == len(samples) // 441
    grid, bank, _ = grid_for(RATE)
    padded = np.concatenate((np.zeros(grid.frame_len - grid.hop, dtype=np.float32), samples))
    frames = frame_view(padded, grid.frame_len, grid.hop)[: len(rows)]
    apart = band_magnitudes(spectrum(frames * analysis_window(grid.frame_len), grid.fft_size), bank)
    np.testing.assert_allclose(rows, apart, rtol=1e-5, atol=1e-7)
    assert rows.max() > 0.01  # the drums are in them


@pytest.mark.parametrize("block", [1, 441, 1000, 65536])
def test_rows_do_not_depend_on_the_block_size(block: int) -> None:
    samples = audio()
    reference, _ = tapped(samples, 882)
    rows, _ = tapped(samples, block)
    np.testing.assert_array_equal(rows, reference[: len(rows)])


def test_rows_do_not_depend_on_the_batch_or_the_method() -> None:
    samples = audio()
    reference, _ = tapped(samples, 882)
    others = [OnsetDetector(RATE, 1, DetectorSettings(method=m)) for m in ("superflux", "hfc", "superflux")]
    for detector in others:
        detector.tap_rows()
    got: list[list[np.ndarray]] = [[] for _ in others]
    for start in range(0, len(samples), 882):
        block = samples[start : start + 882]
        process_many([(others[0], block), (others[1], block), (others[2], block[::-1].copy())])
        for rows, detector in zip(got, others, strict=True):
            rows += detector.take_rows()
    np.testing.assert_array_equal(np.concatenate(got[0]), reference)
    np.testing.assert_allclose(np.concatenate(got[1]), reference, rtol=1e-5, atol=1e-7)


def test_tap_off_refuses_flush_keeps_it_on_and_it_turns_off() -> None:
    detector = OnsetDetector(RATE, 1)
    detector.process(np.zeros(882, dtype=np.float32))
    with pytest.raises(ValueError, match="tap_rows"):
        detector.take_rows()
    detector.tap_rows()
    detector.process(audio()[:4410])
    assert sum(len(r) for r in detector.take_rows()) == 10
    detector.flush()
    detector.process(np.zeros(882, dtype=np.float32))
    assert sum(len(r) for r in detector.take_rows()) == 2
    detector.process(np.zeros(882, dtype=np.float32))
    detector.tap_rows(False)  # off: what was not taken is dropped, nothing more is kept
    detector.process(np.zeros(882, dtype=np.float32))
    with pytest.raises(ValueError, match="tap_rows"):
        detector.take_rows()
