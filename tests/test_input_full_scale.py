"""Float samples far beyond full scale (|x| of 1000 to 3e38, even for 20 ms) are clipped to [-1, 1] where
audio enters, counted and reported, live (``warning`` ``samples_clipped``) and in files (``result``
``clipped_samples``), so they never blind the detector for the seconds after. Amplitude, place and length
of the burst are fuzzed on the file path (the same clipping as live)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.dsp import DetectorSettings
from server.dsp.blocks import clip_full_scale
from server.jobs.work import FileAnalysis, analyse_step
from server.protocol.errors import ProtocolError
from server.protocol.stream_messages import AudioFormat, Encoding, parse_audio
from server.transport.audio_decode import AudioDecoder, DecodeScratch
from testkit import signals
from tests.analysis_files import matches, post_file, wait_finished
from tests.stream_client import Publisher, of_type, onset_times

RATE = 44100
BURST_AT_S = 2.0
BURST_S = 0.02
AFTER_S = (BURST_AT_S + 0.1, 5.0)  # where a blinded detector finds nothing


def drums(seed: int = 0, duration_s: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    sig = signals.drums(sr=RATE, duration_s=duration_s, seed=seed)
    mono = sig.samples if sig.samples.ndim == 1 else sig.samples.mean(axis=1)
    return mono.astype(np.float32), np.asarray(sig.onsets_s)


def with_burst(samples: np.ndarray, amplitude: float, at_s: float = BURST_AT_S,
               length: int = round(BURST_S * RATE)) -> np.ndarray:
    """A square burst of ±``amplitude`` (float32) over ``length`` samples from ``at_s``."""
    out = samples.copy()
    start = round(at_s * RATE)
    out[start:start + length] = np.float32(amplitude) * np.where(np.arange(length) % 2, -1, 1)
    return out


def within(times: list[float] | np.ndarray, span: tuple[float, float]) -> list[float]:
    return [float(t) for t in times if span[0] <= t <= span[1]]


@pytest.mark.parametrize(("amplitude", "method"), [(1000.0, "superflux"), (1e19, "energy"),
                                                   (3e38, "superflux")])
async def test_a_live_burst_beyond_full_scale_is_clipped_and_warned(
    server: TestServer, http: aiohttp.ClientSession, amplitude: float, method: str
) -> None:
    clean, truth = drums()
    loud = with_burst(clean, amplitude)
    publisher = await Publisher.open(http, server)
    await publisher.start(RATE, settings={"method": method})
    await publisher.stream(loud, RATE, pace=0.5)
    messages = await publisher.stop()
    warnings = [m for m in of_type(messages, "warning") if m["code"] == "samples_clipped"]
    assert warnings and warnings[-1]["clipped_samples"] == round(BURST_S * RATE), warnings
    found = onset_times(messages)
    assert matches(within(found, AFTER_S), within(truth, AFTER_S)) >= 0.9, found
    assert within(found, (BURST_AT_S - 0.03, BURST_AT_S + 0.05)), found  # the burst's own onset


async def test_a_file_with_a_burst_beyond_full_scale_reports_the_clipped_samples(
    server: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    clean, truth = drums(seed=2)
    path = tmp_path / "loud.wav"
    sf.write(str(path), with_burst(clean, 1e19), RATE, subtype="FLOAT")
    status, body = await post_file(http, str(server.make_url("")).rstrip("/"), path, filename="loud.wav",
                                   settings={"method": "energy"})
    assert status == 202, body
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), body["task_id"])
    assert done["status"] == "success", done
    assert done["result"]["clipped_samples"] == round(BURST_S * RATE)
    found = [o["time"] for o in done["result"]["onsets"]]
    assert matches(within(found, AFTER_S), within(truth, AFTER_S)) >= 0.9, found


def analyse(path: Path, spool: Path, method: str) -> tuple[list[float], int]:
    state = FileAnalysis(str(path), str(spool), DetectorSettings.from_mapping({"method": method}))
    onsets: list[float] = []
    while not state.finished:
        step = analyse_step(state)
        assert step.error is None, step.error
        state = step.state
        onsets += [time_s for time_s, _ in step.onsets]
    return onsets, state.clipped_samples


CLEAN, _ = drums(seed=5)
MAX_F32 = float(np.finfo(np.float32).max)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amplitude=st.floats(min_value=1.5, max_value=MAX_F32, width=32)
       | st.floats(min_value=-MAX_F32, max_value=-1.5, width=32),
       at_s=st.floats(min_value=0.5, max_value=2.5), length=st.integers(min_value=1, max_value=4410),
       method=st.sampled_from(["superflux", "energy", "hfc", "complex"]))
def test_any_burst_beyond_full_scale_is_counted_and_analysed_as_full_scale(
    tmp_path: Path, amplitude: float, at_s: float, length: int, method: str
) -> None:
    loud, full_scale = tmp_path / "loud.wav", tmp_path / "full-scale.wav"
    sf.write(str(loud), with_burst(CLEAN, amplitude, at_s, length), RATE, subtype="FLOAT")
    sf.write(str(full_scale), with_burst(CLEAN, float(np.sign(amplitude)), at_s, length), RATE,
             subtype="FLOAT")
    found, clipped = analyse(loud, tmp_path / "x.spool", method)
    assert clipped == length
    # Exactly what the same burst at full scale gives: as loud as audio gets, and no louder.
    assert found == analyse(full_scale, tmp_path / "y.spool", method)[0]


def test_clip_full_scale_keeps_in_range_samples_and_integers_as_they_are() -> None:
    inside = np.array([-1.0, -0.5, 0.0, 1.0], dtype=np.float32)
    same, clipped = clip_full_scale(inside)
    assert same is inside and clipped == 0
    ints = np.array([-32768, 32767], dtype=np.int16)
    assert clip_full_scale(ints)[0] is ints
    out, clipped = clip_full_scale(np.array([[2.0, -3e38], [0.25, 1.0]], dtype=np.float32))
    assert clipped == 2 and out.tolist() == [[1.0, -1.0], [0.25, 1.0]]


EDGES = np.array([0.0, -0.0, 1.0, -1.0, np.nextafter(np.float32(1), np.float32(2)),
                  -np.nextafter(np.float32(1), np.float32(2)), 1e-45, -1e-45, 3e38, -3e38, np.inf, -np.inf,
                  np.nan, -np.nan], dtype=np.float32)
NAN_BITS = np.array([0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFC00000], dtype="<u4").view(np.float32)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("value", [*EDGES, *NAN_BITS])
def test_a_live_chunk_decodes_as_parse_audio_and_clip_full_scale_decide(channels: int, value: float) -> None:
    """The live path's two-call check (sign bit off, maximum against the bits of 1.0) accepts, clips and
    rejects exactly what ``parse_audio`` + ``clip_full_scale`` do, for every edge of full scale, ±0, the
    subnormals, ±Inf and NaNs of any payload and sign."""
    audio_format = AudioFormat(48000, channels, Encoding.PCM_F32LE)
    decode = AudioDecoder(audio_format)
    chunk = np.full(960 * channels, 0.25, dtype=np.float32)
    chunk[517] = value
    for data in (chunk.tobytes(), chunk[: 480 * channels].tobytes(), chunk.tobytes()):  # size changes, back
        try:
            want = clip_full_scale(parse_audio(data, audio_format))
        except ProtocolError as exc:
            with pytest.raises(ProtocolError) as raised:
                decode(data)
            assert raised.value.code == exc.code == "bad_samples"
            continue
        samples, clipped = decode(data)
        assert clipped == want[1]
        assert samples.shape == want[0].shape and samples.dtype == want[0].dtype
        assert np.array_equal(samples, want[0])
    with pytest.raises(ProtocolError) as raised:  # not a whole number of frames (or samples)
        decode(chunk.tobytes()[:-2])
    assert raised.value.code == "bad_audio_length"


def test_decoders_sharing_one_scratch_decode_each_their_own_chunks() -> None:
    """Publishers of one event loop share the check's scratch array: decoders of different chunk sizes and
    channel counts, called in turn, each decode exactly as ``parse_audio`` + ``clip_full_scale``."""
    scratch = DecodeScratch()
    formats = [AudioFormat(48000, 1, Encoding.PCM_F32LE), AudioFormat(44100, 2, Encoding.PCM_F32LE)]
    decoders = [AudioDecoder(audio_format, scratch) for audio_format in formats]
    rng = np.random.default_rng(19)
    for size in (960, 2048, 441, 960, 16):
        for audio_format, decode in zip(formats, decoders, strict=True):
            chunk = rng.uniform(-1.2, 1.2, size * audio_format.channels).astype(np.float32)
            if size == 960:
                chunk = np.clip(chunk, -1.0, 1.0)  # the usual chunk: within full scale, nothing clipped
            data = chunk.tobytes()
            want, want_clipped = clip_full_scale(parse_audio(data, audio_format))
            samples, clipped = decode(data)
            assert clipped == want_clipped and np.array_equal(samples, want)
