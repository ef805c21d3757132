"""The live-stream building blocks on their own: ring buffer, subscription queue, batching, settings split."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, OnsetDetector
from server.events.subscription import Subscription
from server.exceptions import SettingsError
from server.rhythm import RhythmSession
from server.stream.in_worker import Job, ResidentDetectors, run_batch
from server.stream.registry import StreamRegistry
from server.stream.ring import RingBuffer
from server.stream.settings import StreamOptions, StreamSettings, detector_timing
from testkit import signals


def frames(start: int, n: int, channels: int = 2) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)[:, None].repeat(channels, axis=1)


def test_ring_buffer_keeps_order_across_the_wrap_and_counts_absolute_frames() -> None:
    ring = RingBuffer(10, 2, np.int16)
    written = 0
    out = []
    for n in (3, 4, 0, 2, 5, 1):
        assert ring.write(frames(written, n)) == 0 or len(ring) == 10
        written += n
        out.append(ring.read(2))
    out.append(ring.read())
    got = np.concatenate(out)[:, 0]
    assert list(got) == list(range(written))
    assert ring.start == ring.end == written
    assert len(ring) == 0


def test_ring_buffer_drops_the_oldest_frames_when_full() -> None:
    ring = RingBuffer(8, 1, np.float32)
    assert ring.write(frames(0, 6, 1).astype(np.float32)) == 0
    assert ring.write(frames(6, 5, 1).astype(np.float32)) == 3
    assert (ring.start, ring.end, len(ring)) == (3, 11, 8)
    assert ring.write(frames(11, 20, 1).astype(np.float32)) == 20  # larger than the buffer: keep its tail
    assert (ring.start, ring.end) == (23, 31)
    assert list(ring.read()[:, 0]) == list(range(23, 31))


def test_ring_buffer_reads_bytes_equal_to_the_frames_across_the_wrap() -> None:
    ring, copy = RingBuffer(10, 3, np.float32), RingBuffer(10, 3, np.float32)
    written = 0
    for n in (4, 7, 9, 2, 10, 5):
        block = frames(written, n, 3).astype(np.float32)
        ring.write(block)
        copy.write(block)
        written += n
        for take in (3, None):
            data = ring.read_bytes(take)
            assert data == copy.read(take).tobytes()
        assert (ring.start, ring.end) == (copy.start, copy.end)


def test_ring_buffer_grows_with_a_backlog_and_gives_the_memory_back_once_it_keeps_up() -> None:
    ring = RingBuffer(48000, 1, np.float32)
    start = ring.allocated_frames
    written = 0
    for _ in range(10):  # a backlog of ten 20 ms chunks at 48 kHz
        ring.write(frames(written, 960, 1).astype(np.float32))
        written += 960
    assert ring.allocated_frames >= 9600
    assert list(ring.read()[:, 0]) == list(range(written))  # one read takes it all: storage stays
    grown = ring.allocated_frames
    sizes = []
    for _ in range(12):  # keeping up: one chunk, then one read
        ring.write(frames(written, 960, 1).astype(np.float32))
        assert list(ring.read()[:, 0]) == list(range(written, written + 960))
        written += 960
        sizes.append(ring.allocated_frames)
    assert sizes[0] < grown and sizes[-1] == start  # halved read by read, down to the initial storage
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000, 192000])
def test_detector_timing_is_what_a_detector_reports(method: str, sample_rate: int) -> None:
    for settings in (DetectorSettings(method=method, beats=False),
                     DetectorSettings(method=method, lookahead_ms=0.0, beats=False)):
        detector = OnsetDetector(sample_rate, 1, settings)
        assert detector_timing(sample_rate, settings) == (detector.latency_s, detector.hop_s)
    # With beats on, an onset's band is decided with it: nothing is added.
    for settings in (DetectorSettings(method=method), DetectorSettings(method=method, lookahead_ms=10.0)):
        detector = OnsetDetector(sample_rate, 1, settings)
        assert detector_timing(sample_rate, settings) == (detector.latency_s, detector.hop_s)


def test_with_beats_on_an_onset_comes_within_the_latency_it_is_given() -> None:
    # The rhythm beside the detector names an onset's band when the onset comes: latency_ms is the detector's.
    sample_rate = 48000
    for lookahead_ms in (10.0, 0.0):
        settings = DetectorSettings(lookahead_ms=lookahead_ms)
        latency_s, _ = detector_timing(sample_rate, settings)
        samples = signals.drums(sample_rate, 6.0, seed=81).samples
        detector = OnsetDetector(sample_rate, 1, settings)
        rhythm = RhythmSession.beside(detector)
        delays = []
        for start in range(0, len(samples), 48):
            found = detector.process(samples[start : start + 48])
            _, banded = rhythm.process(detector.take_odf(), detector.take_rows(), found)
            delays += [detector.samples_in / sample_rate - b.onset.time for b in banded]
        assert len(delays) >= 10
        # Within the latency plus half a hop (where the attack lies in its hop) and a block.
        assert max(delays) <= latency_s + 0.005 + 48 / sample_rate, (lookahead_ms, max(delays))


async def test_subscription_reports_overflow_in_order_and_always_keeps_the_end() -> None:
    sub = Subscription("s", limit=3)
    for i in range(7):
        sub.offer({"type": "onset", "n": i})
    assert len(sub) == 3 and sub.dropped_total == 4
    got = [await sub.get() for _ in range(3)]
    assert [e["n"] for e in got if e] == [0, 1, 2]
    sub.offer({"type": "onset", "n": 7})
    assert await sub.get() == {"type": "overflow", "stream_id": "s", "dropped": 4}
    assert await sub.get() == {"type": "onset", "n": 7}
    for i in range(8, 12):
        sub.offer({"type": "onset", "n": i})
    sub.finish({"type": "ended"})
    rest = [await sub.get() for _ in range(5)]
    assert [e["type"] for e in rest if e] == ["onset", "onset", "onset", "overflow", "ended"]
    assert await sub.get() is None


async def test_subscription_get_waits_and_close_releases_it() -> None:
    sub = Subscription("s", limit=2)
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.offer({"type": "status"})
    assert await waiter == {"type": "status"}
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    assert await waiter is None


def test_batch_keeps_detectors_in_the_worker_and_isolates_a_failing_job() -> None:
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((16000, 1)) * 0.1).astype(np.float32)
    audio[4000:4020] = 0.9
    audio[12000:12020] = 0.9
    resident = ResidentDetectors()
    first_half = Job("a/0", 16000, 1, "<f4", DetectorSettings(), audio[:7000].tobytes(), 10.0, fresh=True)
    bad_samples = np.zeros(10, np.float32)
    bad_samples[3] = np.nan
    bad = Job("b/0", 16000, 1, "<f4", DetectorSettings(), bad_samples.tobytes(), 0.0, fresh=True)
    first, failed = run_batch([first_half, bad], resident=resident)
    assert failed.error is not None and not failed.ok
    assert len(resident) == 1  # a's detector stays in the worker; b's failed one is not kept
    second_half = Job("a/0", 16000, 1, "<f4", None, audio[7000:].tobytes(), 10.0, flush=True)
    second, = run_batch([second_half], resident=resident)
    assert len(resident) == 0  # flushed at the end: forgotten
    expected = OnsetDetector(16000)
    want = expected.process(audio) + expected.flush()
    assert first.ok and second.ok
    found = [*first.onsets, *second.onsets]
    assert [(t, s) for t, s, _ in found] == [(o.time + 10.0, o.strength) for o in want]
    assert all(band in ("low", "mid", "high") for _, _, band in found)  # setting beats: on by default
    assert [round(o.time, 2) for o in want][-2:] == [0.25, 0.75]  # both clicks, one in each job


@pytest.mark.parametrize("channels", [1, 2])
def test_batch_sends_the_detection_function_of_the_jobs_that_ask_for_it_only(channels: int) -> None:
    """A job without ``odf`` sends none back and keeps none for later: the next job that asks gets its own
    frames' values only, the same as a detector fed the whole stream gives for them."""
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal((4800 * 3, channels)) * 0.1).astype(np.float32)
    settings = DetectorSettings(beats=False)
    resident = ResidentDetectors()
    parts = [audio[i * 4800:(i + 1) * 4800].tobytes() for i in range(3)]
    jobs = [Job("a/0", 48000, channels, "<f4", settings if i == 0 else None, part, 0.0, fresh=i == 0,
                odf=i == 2) for i, part in enumerate(parts)]
    results = [run_batch([job], resident=resident)[0] for job in jobs]
    assert results[0].odf is None and results[1].odf is None
    whole = OnsetDetector(48000, channels, settings)
    whole.process(audio[:9600])
    whole.take_odf()
    whole.process(audio[9600:])
    want = whole.take_odf()
    assert results[2].odf is not None and len(want) == 10
    assert np.array_equal(results[2].odf, want)


def test_batch_reports_a_detector_the_worker_does_not_hold_and_forgets_ended_streams() -> None:
    resident = ResidentDetectors()
    silence = np.zeros(800, np.int16).tobytes()
    run_batch([Job("a/0", 8000, 1, "<i2", DetectorSettings(), silence, 0.0, fresh=True),
               Job("b/0", 8000, 1, "<i2", DetectorSettings(), silence, 0.0, fresh=True)], resident=resident)
    assert len(resident) == 2
    lost, = run_batch([Job("c/0", 8000, 1, "<i2", None, silence, 0.0)], forget=["a/0"], resident=resident)
    assert lost.lost and not lost.ok and lost.onsets == []
    assert len(resident) == 1


def test_settings_split_detector_settings_from_stream_options() -> None:
    settings = StreamSettings.from_mapping({"threshold": 3, "odf": True})
    assert settings.detector.threshold == 3.0
    assert settings.options == StreamOptions(odf=True)
    assert settings.to_dict() == {**settings.detector.to_dict(), **StreamOptions(odf=True).to_dict()}
    assert settings.to_dict()["odf"] is True
    changed = StreamSettings.from_mapping({"method": "hfc"}, base=settings)
    assert (changed.detector.method, changed.detector.threshold, changed.options.odf) == ("hfc", 3.0, True)
    with pytest.raises(SettingsError, match="hop_ms"):
        StreamSettings.from_mapping({"hop_ms": 5}, base=settings)
    assert StreamSettings.from_mapping({"hop_ms": 5}).detector.hop_ms == 5.0  # fine before the start
    with pytest.raises(SettingsError, match="odf"):
        StreamSettings.from_mapping({"odf": 1})
    with pytest.raises(SettingsError, match="nonsense"):
        StreamSettings.from_mapping({"nonsense": 1})


def test_stream_ids_never_start_with_a_dash() -> None:
    """A leading '-' makes `run.py listen ID` read the id as an option (1 in 64 random ids would)."""
    registry = StreamRegistry(max_streams=1, max_per_client=1)
    ids = {registry.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not [stream_id for stream_id in ids if stream_id.startswith("-")]
