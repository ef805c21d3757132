"""``flush``: everything received so far is analysed and its pending onsets sent, then ``flushed``; the
stream goes on with its past, without a repeated or a false onset after the flush."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.dsp import METHODS, DetectorSettings, OnsetDetector, detect_onsets
from testkit import signals
from testkit.rhythm_signals import beat_times, drum_track
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.conftest import StartServer
from tests.stream_client import Publisher, of_type, onset_times
from tests.test_webrtc_stream import base_url, check_onsets, stream_and_stop

SR = 44100
HOP_S = 0.01  # an onset decided by flush is where an ending stream puts it: within one hop of the whole's
# A look-ahead, so that an onset can be inside it (the default, 0, decides onsets with their frame)
LOOKING_AHEAD = DetectorSettings(lookahead_ms=10.0)


def clicks_with_cut() -> tuple[np.ndarray, int, float]:
    """Clicks, and a cut 15 ms after one of them: its onset is still inside the look-ahead there."""
    signal = signals.clicks(SR, 3.0, seed=9)
    attack_s = float(signal.onsets_s[3])
    return signal.samples, round((attack_s + 0.015) * SR), attack_s


@pytest.mark.parametrize("method", METHODS)
def test_decide_pending_reports_early_and_changes_nothing_after(method: str) -> None:
    settings = DetectorSettings(method=method)
    for signal in (signals.drums(SR, 3.0, seed=11), signals.music_mix(SR, 3.0, seed=6)):
        whole = [o.time for o in detect_onsets(signal.samples, SR, settings)]
        for attack_s in signal.onsets_s[2:6]:
            for after_s in (0.005, 0.015, 0.025):
                cut = round((attack_s + after_s) * SR)
                detector = OnsetDetector(SR, 1, settings)
                got = detector.process(signal.samples[:cut]) + detector.decide_pending()
                got += detector.process(signal.samples[cut:]) + detector.flush()
                times = [o.time for o in got]
                assert len(times) == len(whole), (attack_s, after_s, times, whole)
                assert np.max(np.abs(np.array(times) - whole)) <= HOP_S


def test_decide_pending_reports_the_onset_inside_the_look_ahead() -> None:
    samples, cut, attack_s = clicks_with_cut()
    detector = OnsetDetector(SR, settings=LOOKING_AHEAD)
    assert all(o.time < attack_s - 0.1 for o in detector.process(samples[:cut]))
    decided = detector.decide_pending()
    assert len(decided) == 1 and abs(decided[0].time - attack_s) <= 0.005
    assert detector.decide_pending() == []  # nothing pending twice
    rest = detector.process(samples[cut:]) + detector.flush()
    assert all(o.time > attack_s + 0.1 for o in rest)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_flush_over_a_websocket(
    start_server: StartServer, http: aiohttp.ClientSession, codec: str
) -> None:
    server = await start_server()
    samples, cut, attack_s = clicks_with_cut()
    publisher = await Publisher.open(http, server, codec)
    await publisher.start(SR, settings={"lookahead_ms": LOOKING_AHEAD.lookahead_ms})
    await publisher.send({"type": "flush"})  # before any audio: nothing pending
    first = await publisher.receive_until("flushed")
    assert first[-1] == {"type": "flushed", "stream_id": first[-1]["stream_id"], "received_s": 0.0,
                         "analysed_s": 0.0, "onsets": 0}
    await publisher.stream(samples[:cut], SR, chunk_s=0.02)
    await publisher.send({"type": "flush"})
    before = await publisher.receive_until("flushed")
    flushed = before[-1]
    assert flushed["received_s"] == pytest.approx(cut / SR, abs=1e-6)
    assert flushed["analysed_s"] == flushed["received_s"]
    times = onset_times(before)
    assert times and abs(times[-1] - attack_s) <= 0.005, times  # the onset inside the look-ahead came out
    assert flushed["onsets"] == len(times)
    await publisher.stream(samples[cut:], SR, chunk_s=0.02)
    after = await publisher.stop()
    assert of_type(after, "stopped")[0]["onsets"] == len(times) + len(onset_times(after))
    whole = [o.time for o in detect_onsets(samples, SR, LOOKING_AHEAD)]
    got = times + onset_times(after)
    assert len(got) == len(whole) and np.max(np.abs(np.array(got) - whole)) <= HOP_S
    assert after[-1] == {"type": "<closed>", "code": 1000}


async def test_flush_of_silence_answers_with_no_onsets(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.start(SR)
    await publisher.send_audio(np.zeros(SR // 10, dtype=np.float32))
    await publisher.send({"type": "flush"})
    flushed = (await publisher.receive_until("flushed"))[-1]
    assert flushed["received_s"] == pytest.approx(0.1, abs=1e-6) and flushed["onsets"] == 0
    assert [m["type"] for m in await publisher.stop()][-2:] == ["stopped", "<closed>"]


async def test_flush_on_the_webrtc_data_channel(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    signal = signals.clicks(sr=48000, duration_s=2.0, seed=11)
    track = ArrayTrack(signal.samples)
    client = await WebRtcClient.offerer(track).connect(http, base_url(server))
    try:
        assert (await client.receive())["type"] == "started"
        await asyncio.sleep(1.0)
        client.send({"type": "flush"})
        before = await client.receive_until("flushed")
        flushed = before[-1]
        assert flushed["stream_id"] == client.stream_id
        assert 0.5 < flushed["analysed_s"] <= flushed["received_s"]
        assert flushed["onsets"] == len(of_type(before, "onset"))
        after = await stream_and_stop(client, track)
        assert [m["type"] for m in after][-2:] == ["stopped", "<closed>"]
        got = np.array([m["time"] for m in before + after if m["type"] == "onset"])
        check_onsets(got, signal.onsets_s)  # every click once: none repeated or lost around the flush
    finally:
        await client.close()


async def test_flush_sends_every_onset_with_its_band(start_server: StartServer,
                                                     http: aiohttp.ClientSession) -> None:
    # With beats on, an onset waits ~20 ms of audio for its band; a flush must not hold it back, nor send
    # it unbanded: cut 15 ms after a kick (still in the look-ahead) and 35 ms after a snare (reported by
    # the detector, its band not yet decided).
    track = drum_track(beat_times([(120.0, 8.0)]), seed=91, hats=False)
    rate = track.sample_rate
    kick_s, snare_s = float(track.hits["kick"][4]), float(track.hits["snare"][5])
    cuts = [round((kick_s + 0.015) * rate), round((snare_s + 0.035) * rate)]
    server = await start_server()
    publisher = await Publisher.open(http, server)
    started = await publisher.start(rate)
    assert started["settings"]["beats"] is True
    messages: list[dict[str, Any]] = []
    flushed_at: list[int] = []
    at = 0
    for cut in cuts:
        await publisher.stream(track.audio[at:cut], rate, chunk_s=0.02)
        await publisher.send({"type": "flush"})
        messages += await publisher.receive_until("flushed")
        flushed_at.append(len(messages))
        at = cut
    await publisher.stream(track.audio[at:], rate, chunk_s=0.02)
    messages += await publisher.stop()

    onsets = of_type(messages, "onset")
    assert onsets and all(o["band"] in ("low", "mid", "high") for o in onsets), onsets
    for cut, index in zip(cuts, flushed_at, strict=True):
        before = of_type(messages[:index], "onset")
        later = of_type(messages[index:], "onset")
        assert all(o["time"] > cut / rate - 0.005 for o in later), (cut / rate, later[:2])
        assert any(abs(o["time"] - cut / rate) <= 0.04 for o in before)  # the hit just before the cut
    first, second = (of_type(messages[:index], "onset")[-1] for index in flushed_at)
    assert abs(first["time"] - kick_s) <= 0.01 and first["band"] == "low"
    assert abs(second["time"] - snare_s) <= 0.01 and second["band"] == "mid"
    whole = [o.time for o in detect_onsets(track.audio, rate)]
    got = np.array([o["time"] for o in onsets])
    assert len(got) == len(whole) and np.max(np.abs(got - whole)) <= HOP_S
