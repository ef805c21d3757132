"""The start of a live stream through the real server: a publisher that reconnects in the middle of the
music gets no onset from the silence before its first sample; one that starts on a hit gets that hit."""

from __future__ import annotations

import aiohttp
import numpy as np

from server.dsp import detect_onsets
from testkit import signals
from tests.conftest import StartServer
from tests.stream_client import Publisher, onset_times

SR = 44100


async def test_a_reconnect_inside_the_music_has_no_onset_at_its_start(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    mix = signals.music_mix(SR, 6.0, seed=6)
    for cut_s in (2.345, 3.456):  # two publishers picking the music up mid-sound, one after the other
        tail = mix.samples[round(cut_s * SR) :][: 2 * SR]
        publisher = await Publisher.open(http, server)
        await publisher.start(SR)
        await publisher.stream(tail, SR, chunk_s=0.0123)
        got = onset_times(await publisher.stop())
        first_true_s = float(mix.onsets_s[mix.onsets_s > cut_s][0] - cut_s)
        assert got and got[0] >= first_true_s - 0.05, (cut_s, got[:3], first_true_s)
        want = [onset.time for onset in detect_onsets(tail, SR)]
        assert len(got) == len(want) and np.max(np.abs(np.array(got) - want)) <= 0.001


async def test_a_stream_that_starts_on_a_hit_reports_it(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    rng = np.random.default_rng(4)
    samples = np.concatenate([0.8 * signals.drum(rng, SR, "snare"), np.zeros(SR // 2)]).astype(np.float32)
    publisher = await Publisher.open(http, server)
    await publisher.start(SR)
    await publisher.stream(samples, SR, chunk_s=0.01)
    got = onset_times(await publisher.stop())
    assert len(got) == 1 and got[0] < 0.01, got
