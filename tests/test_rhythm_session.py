"""The per-stream rhythm session beside a real detector: whole-file analysis, block-size invariance,
pickling mid-stream, and a detector on another grid refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from server.dsp import DetectorSettings, OnsetDetector
from server.rhythm.beat import Beat
from server.rhythm.session import BandedOnset, RhythmSession, analyze_rhythm
from testkit.rhythm_signals import beat_times, drum_track


def stream(
    audio: np.ndarray, rate: int, block: int, session: RhythmSession | None = None
) -> tuple[list[Beat], list[BandedOnset]]:
    detector = OnsetDetector(rate, 1)
    session = session or RhythmSession(rate)
    beats: list[Beat] = []
    banded: list[BandedOnset] = []
    for start in range(0, len(audio), block):
        chunk = audio[start : start + block]
        found = detector.process(chunk)
        new_beats, new_banded = session.process(chunk, detector.take_odf(), found)
        beats += new_beats
        banded += new_banded
    session.process(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), detector.flush())
    banded += session.flush()
    return beats, banded


def test_whole_file_tempo_beats_and_bands() -> None:
    track = drum_track(beat_times([(128, 16.0)]), seed=31)
    result = analyze_rhythm(track.audio, track.sample_rate)
    assert result.tempo_bpm is not None
    assert abs(result.tempo_bpm / 128.0 - 1.0) <= 0.02
    assert len(result.beats) >= 0.8 * len(track.beats)
    # Every onset of the detector gets exactly one band, in time order.
    times = [b.onset.time for b in result.onsets]
    assert times == sorted(times)
    assert {b.band for b in result.onsets} == {"low", "mid", "high"}
    kicks = track.hits["kick"]
    near_kick = [b for b in result.onsets if np.min(np.abs(kicks - b.onset.time)) <= 0.02]
    assert np.mean([b.band == "low" for b in near_kick]) >= 0.8


@pytest.mark.parametrize("block", [441, 1000, 4410, 65536])  # 65536: a block longer than the rises kept
def test_block_size_invariance(block: int) -> None:
    track = drum_track(beat_times([(110, 10.0)]), seed=32)
    reference = stream(track.audio, track.sample_rate, 882)
    assert stream(track.audio, track.sample_rate, block) == reference


def test_pickle_mid_stream() -> None:
    track = drum_track(beat_times([(110, 10.0)]), seed=33)
    audio, rate = track.audio, track.sample_rate
    whole = stream(audio, rate, 882)
    detector = OnsetDetector(rate, 1)
    session = RhythmSession(rate)
    half = 882 * 300
    beats: list[Beat] = []
    banded: list[BandedOnset] = []
    for start in range(0, half, 882):
        chunk = audio[start : start + 882]
        found = detector.process(chunk)
        new_beats, new_banded = session.process(chunk, detector.take_odf(), found)
        beats += new_beats
        banded += new_banded
    detector, session = pickle.loads(pickle.dumps((detector, session)))
    for start in range(half, len(audio), 882):
        chunk = audio[start : start + 882]
        found = detector.process(chunk)
        new_beats, new_banded = session.process(chunk, detector.take_odf(), found)
        beats += new_beats
        banded += new_banded
    session.process(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), detector.flush())
    banded += session.flush()
    assert (beats, banded) == whole


def test_detector_on_another_grid_is_refused() -> None:
    rate = 44100
    detector = OnsetDetector(rate, 1, DetectorSettings(hop_ms=5.0))
    session = RhythmSession(rate)
    chunk = np.zeros(882, dtype=np.float32)
    detector.process(chunk)
    with pytest.raises(ValueError, match="10 ms hop"):
        session.process(chunk, detector.take_odf(), [])
