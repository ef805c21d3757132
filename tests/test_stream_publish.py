"""Publishing a live stream through the real server: started, onsets, status, configure, odf, stop."""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np
import pytest

from server import appkeys
from server.dsp import DetectorSettings, OnsetDetector, detect_onsets
from testkit import signals
from tests.conftest import StartServer
from tests.stream_client import Publisher, of_type, onset_times

TOLERANCE_S = 0.001  # the contract: a stream's onsets equal the whole-signal detector's within 1 ms


def as_encoding(samples: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "pcm_s16le":
        return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    return samples.astype(np.float32)


def assert_same_onsets(got: list[float], want: list[float]) -> None:
    assert len(want) > 3, "the signal should have onsets"
    assert len(got) == len(want), (got, want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


async def test_started_reports_every_effective_setting_and_the_latency(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    started = await publisher.start(44100, settings={"threshold": 2.5, "method": "hfc"})
    expected = DetectorSettings.from_mapping({"threshold": 2.5, "method": "hfc"})
    assert started["settings"] == {**expected.to_dict(), "odf": False, "osc": [], "ack": False, "name": "",
                                   "link": False}
    detector = OnsetDetector(44100, 1, expected)
    assert started["latency_ms"] == pytest.approx(detector.latency_s * 1000.0, abs=1e-3)
    assert started["hop_ms"] == pytest.approx(detector.hop_s * 1000.0, abs=1e-3)
    assert isinstance(started["stream_id"], str) and len(started["stream_id"]) >= 16
    assert (started["sample_rate"], started["channels"], started["encoding"]) == (44100, 1, "pcm_f32le")
    assert started["limits"]["max_message_bytes"] == server.app[appkeys.CONFIG].max_message_bytes
    messages = await publisher.stop()
    assert messages[-2] == {"type": "stopped", "duration": 0.0, "onsets": 0, "dropped_s": 0.0}
    assert messages[-1]["code"] == 1000


@pytest.mark.parametrize(
    ("codec", "encoding", "channels", "sample_rate", "chunk_s"),
    [
        ("json", "pcm_f32le", 1, 48000, 0.02),
        ("msgpack", "pcm_s16le", 2, 44100, 0.0123),
        ("json", "pcm_s16le", 1, 16000, 0.5),
        ("msgpack", "pcm_f32le", 2, 96000, 0.01),
    ],
)
async def test_onsets_equal_the_whole_signal_detector(
    start_server: StartServer, http: aiohttp.ClientSession, codec: str, encoding: str, channels: int,
    sample_rate: int, chunk_s: float,
) -> None:
    server = await start_server()
    signal = signals.drums(sr=sample_rate, duration_s=3.0, seed=11)
    mono = signal.samples
    samples = mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)
    samples = as_encoding(samples, encoding)
    publisher = await Publisher.open(http, server, codec)
    await publisher.start(sample_rate, channels, encoding)
    await publisher.stream(samples, sample_rate, chunk_s, encoding)
    messages = await publisher.stop()
    want = [onset.time for onset in detect_onsets(samples, sample_rate)]
    assert_same_onsets(onset_times(messages), want)
    stopped = of_type(messages, "stopped")[0]
    assert stopped["onsets"] == len(want)
    assert stopped["duration"] == pytest.approx(len(samples) / sample_rate, abs=1e-6)
    assert messages[-1] == {"type": "<closed>", "code": 1000}
    for onset in of_type(messages, "onset"):
        assert onset["stream_id"] == of_type(messages, "status")[-1]["stream_id"]
        assert onset["strength"] > 0


async def test_configure_applies_from_the_next_audio_keeping_state(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate = 44100
    signal = signals.drums(sr=sample_rate, duration_s=4.0, seed=5)
    first, second = signal.samples[: 2 * sample_rate], signal.samples[2 * sample_rate:]
    publisher = await Publisher.open(http, server)
    await publisher.start(sample_rate)
    await publisher.stream(first, sample_rate)
    await publisher.send({"type": "configure", "settings": {"threshold": 20.0, "min_interval_ms": 80}})
    configured = await publisher.receive_until("configured")
    assert configured[-1]["settings"]["threshold"] == 20.0
    assert configured[-1]["settings"]["min_interval_ms"] == 80.0
    assert configured[-1]["settings"]["method"] == "superflux"  # unspecified settings are kept
    await publisher.stream(second, sample_rate)
    messages = configured + await publisher.stop()

    detector = OnsetDetector(sample_rate, 1)
    want = detector.process(first)
    detector.configure(DetectorSettings.from_mapping({"threshold": 20.0, "min_interval_ms": 80}))
    want += detector.process(second) + detector.flush()
    assert_same_onsets(onset_times(messages), [onset.time for onset in want])
    whole = detect_onsets(signal.samples, sample_rate)
    assert len(want) < len(whole), "the stricter threshold should have removed onsets in the second half"


async def test_stop_flushes_an_onset_inside_the_look_ahead(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate = 48000
    samples = np.zeros(sample_rate, dtype=np.float32)
    for at_s in (0.3, 0.6, 0.985):  # the last click is 15 ms before the end: only flush() can report it
        samples[round(at_s * sample_rate): round(at_s * sample_rate) + 48] = 0.9
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate, settings={"lookahead_ms": 10.0})  # default 0: nothing inside
    assert started["latency_ms"] / 1000.0 > 1.0 - 0.985
    await publisher.stream(samples, sample_rate)
    messages = await publisher.stop()
    times = onset_times(messages)
    assert len(times) == 3
    assert times[-1] == pytest.approx(0.985, abs=0.01)
    assert [m["type"] for m in messages[-2:]] == ["stopped", "<closed>"]
    assert of_type(messages, "stopped")[0]["onsets"] == 3


async def test_status_while_audio_flows(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(status_interval_s=0.05)
    sample_rate = 16000
    publisher = await Publisher.open(http, server)
    await publisher.start(sample_rate, encoding="pcm_s16le")
    silence = np.zeros(round(0.6 * sample_rate), dtype=np.int16)
    await publisher.stream(silence, sample_rate, encoding="pcm_s16le", pace=1.0)
    messages = await publisher.stop()
    statuses = of_type(messages, "status")
    assert len(statuses) >= 3
    for status in statuses:
        assert set(status) >= {"received_s", "analysed_s", "lag_s", "dropped_s", "onsets", "stream_id"}
        assert 0.0 <= status["analysed_s"] <= status["received_s"] <= 0.6 + 1e-9
        assert status["lag_s"] == pytest.approx(status["received_s"] - status["analysed_s"], abs=1e-6)
        assert status["dropped_s"] == 0.0
    assert statuses[-1]["received_s"] == pytest.approx(0.6)
    assert statuses[-1]["analysed_s"] == pytest.approx(0.6)
    received = [s["received_s"] for s in statuses]
    assert received == sorted(received)


async def test_odf_option_streams_the_detection_function(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    sample_rate = 22050
    signal = signals.clicks(sr=sample_rate, duration_s=2.0)
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate, settings={"odf": True})
    assert started["settings"]["odf"] is True
    await publisher.stream(signal.samples, sample_rate, chunk_s=0.1)
    messages = await publisher.stop()
    odf = of_type(messages, "odf")
    assert odf
    hop_s = started["hop_ms"] / 1000.0
    values: list[float] = []
    for message in odf:
        assert message["hop_s"] == pytest.approx(hop_s, abs=1e-8)
        assert message["start"] == pytest.approx(len(values) * hop_s)  # consecutive, no gaps
        values += message["values"]
    assert len(values) == pytest.approx(2.0 / hop_s, abs=8)
    peaks = np.array(values)
    for onset in of_type(messages, "onset"):  # every onset sits on a local peak of the function
        frame = round(onset["time"] / hop_s)
        assert peaks[max(0, frame - 3): frame + 4].max() > np.median(peaks)


async def test_settings_may_be_omitted_or_null(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.send({"type": "start", "sample_rate": 8000, "channels": 1, "encoding": "pcm_s16le",
                          "settings": None})
    started: dict[str, Any] = await publisher.receive()
    options = {"odf": False, "osc": [], "ack": False, "name": "", "link": False}
    assert started["settings"] == {**DetectorSettings().to_dict(), **options}
    await publisher.stop()
