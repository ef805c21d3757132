"""A file analysed in bounded steps equals the streaming detector fed the whole decoded signal at once.

The steps run in this process (the server runs the same function in its pool), with small step sizes so
every file crosses many step boundaries; state is pickled between steps, as it is across processes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server.dsp import DetectorSettings, detect_onsets
from server.jobs.model import ErrorCode
from server.jobs.probe import Decoder, probe, wav_data_shortfall
from server.jobs.work import FileAnalysis, OnsetTuple, analyse_step
from tests.analysis_files import FORMATS, decode_whole, make_file, matches, wav_header


def analyse(path: Path, tmp_path: Path, step_samples: int, settings: DetectorSettings | None = None
            ) -> tuple[FileAnalysis, list[OnsetTuple], int]:
    """Run every step; returns the final state, the onsets and the number of steps."""
    state = FileAnalysis(str(path), str(tmp_path / "job.spool"), settings or DetectorSettings(),
                         step_samples=step_samples)
    onsets: list[OnsetTuple] = []
    steps = 0
    while not state.finished:
        outcome = analyse_step(pickle.loads(pickle.dumps(state)))
        assert outcome.error is None, outcome.error
        assert outcome.state.progress >= state.progress
        state = outcome.state
        onsets += outcome.onsets
        steps += 1
    return state, onsets, steps


def failure(path: Path, tmp_path: Path) -> tuple[str, str]:
    state = FileAnalysis(str(path), str(tmp_path / "job.spool"), DetectorSettings(), step_samples=50_000)
    for _ in range(1000):
        outcome = analyse_step(state)
        if outcome.error is not None:
            return outcome.error.code, outcome.error.message
        state = outcome.state
        if state.finished:
            break
    raise AssertionError("the file was analysed without an error")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_steps_equal_one_pass_over_the_decoded_signal(fmt: str, tmp_path: Path) -> None:
    made = make_file(tmp_path, fmt, duration_s=8.0, seed=11)
    samples, rate = decode_whole(made.path)
    expected = [(o.time, o.strength) for o in detect_onsets(samples, rate)]

    state, onsets, steps = analyse(made.path, tmp_path, step_samples=37_000)

    assert steps > 8  # many step boundaries were crossed
    assert onsets == expected
    assert state.frames_done == len(samples)
    assert state.source is not None and state.source.sample_rate == made.fmt.sample_rate
    assert state.source.channels == 2
    # and the detector finds the hits that were encoded
    assert matches([t for t, _ in onsets], made.onsets_s) >= 0.9


def test_decoders_chosen_per_format(tmp_path: Path) -> None:
    chosen = {name: probe(make_file(tmp_path, name, duration_s=1.0).path).decoder for name in FORMATS}
    assert {name for name, dec in chosen.items() if dec is Decoder.SOUNDFILE} == {"wav", "flac", "ogg"}
    assert {name for name, dec in chosen.items() if dec is Decoder.AV} == {"mp3", "webm", "m4a", "opus"}


def test_settings_reach_the_detector(tmp_path: Path) -> None:
    made = make_file(tmp_path, "wav", duration_s=6.0, seed=3)
    strict = DetectorSettings(threshold=40.0)
    samples, rate = decode_whole(made.path)
    _, onsets, _ = analyse(made.path, tmp_path, 50_000, strict)
    assert onsets == [(o.time, o.strength) for o in detect_onsets(samples, rate, strict)]
    assert len(onsets) < len(detect_onsets(samples, rate))


def test_mono_and_long_steps(tmp_path: Path) -> None:
    made = make_file(tmp_path, "flac", duration_s=5.0, seed=4, channels=1)
    state, onsets, steps = analyse(made.path, tmp_path, step_samples=1 << 22)
    assert steps == 2  # the probe, then everything in one step
    samples, rate = decode_whole(made.path)
    assert onsets == [(o.time, o.strength) for o in detect_onsets(samples, rate)]
    assert state.source is not None and state.source.channels == 1


def test_wav_data_shortfall() -> None:
    header = wav_header(8000, 1, 1000)
    assert wav_data_shortfall(header, len(header) + 1000) == 0
    assert wav_data_shortfall(header, len(header) + 400) == 600
    assert wav_data_shortfall(wav_header(8000, 1, 0xFFFFFFFF), len(header)) == 0
    assert wav_data_shortfall(b"not a wav file at all", 100) == 0


def test_truncated_wav_fails(tmp_path: Path) -> None:
    made = make_file(tmp_path, "wav", duration_s=4.0)
    cut = tmp_path / "cut.wav"
    data = made.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    code, message = failure(cut, tmp_path)
    assert code == ErrorCode.TRUNCATED
    assert "bytes before" in message and str(tmp_path) not in message


def test_truncated_flac_fails(tmp_path: Path) -> None:
    made = make_file(tmp_path, "flac", duration_s=4.0)
    cut = tmp_path / "cut.flac"
    data = made.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert failure(cut, tmp_path)[0] == ErrorCode.TRUNCATED


@pytest.mark.parametrize("content", [b"hello, this is plain text, not audio\n" * 50,
                                     b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
                                     bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8))])
def test_not_audio_fails(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "thing.bin"
    path.write_bytes(content)
    code, message = failure(path, tmp_path)
    assert code == ErrorCode.NOT_AUDIO
    assert str(tmp_path) not in message


def test_empty_inputs_fail(tmp_path: Path) -> None:
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    assert failure(zero, tmp_path)[0] == ErrorCode.EMPTY
    silent = tmp_path / "no-frames.wav"
    silent.write_bytes(wav_header(44100, 1, 0))
    assert failure(silent, tmp_path)[0] == ErrorCode.EMPTY


def test_rate_outside_the_detector_range_fails(tmp_path: Path) -> None:
    path = tmp_path / "low.wav"
    sf.write(str(path), np.zeros(4000, dtype=np.float32), 4000)
    code, message = failure(path, tmp_path)
    assert code == ErrorCode.UNSUPPORTED_FORMAT
    assert "4000" in message


def test_unknown_codec_fails(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(wav_header(44100, 1, 2000, format_tag=0x4242) + bytes(2000))
    code, message = failure(path, tmp_path)
    assert code == ErrorCode.UNSUPPORTED_CODEC
    assert "wav" in message
