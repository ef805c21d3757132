"""A live stream costs what its analysis needs, in bytes: several channels are averaged to mono as they
arrive, its buffer is bounded by ``max_stream_buffer_bytes``, and all streams' buffers together by
``max_buffer_bytes`` (a stream that would pass it: ``buffer_limit``, close 1013)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import aiohttp
import numpy as np
import pytest

from server import appkeys
from server.dsp import detect_onsets
from server.stream.ring import RingBuffer
from server.transport import warm_up
from testkit import signals
from tests.conftest import ServerProcess, StartServer
from tests.stream_client import Publisher, onset_times

TOLERANCE_S = 0.001


async def test_a_192_khz_32_channel_stream_is_kept_as_mono_and_analysed_the_same(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    rate, channels = 192000, 32
    server = await start_server(max_message_bytes=1 << 20)
    mono = signals.drums(sr=rate, duration_s=2.0, seed=4).samples.astype(np.float32)
    gains = np.linspace(1.0, 0.2, channels, dtype=np.float32)
    samples = mono[:, None] * gains[None, :]
    publisher = await Publisher.open(http, server)
    started = await publisher.start(rate, channels)
    budget = started["limits"]["max_stream_buffer_bytes"]
    (session,) = list(server.app[appkeys.STREAMS].registry)
    # 5 s of 32 float channels would be 123 MB; kept as mono float32 it is 3.84 MB, under the budget.
    assert session.buffer_bytes == 5 * rate * 4 <= budget
    await publisher.stream(samples, rate, chunk_s=0.04)
    messages = await publisher.stop()
    want = [onset.time for onset in detect_onsets(samples, rate)]
    got = onset_times(messages)
    assert len(want) > 3 and len(got) == len(want), (got, want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


async def test_the_per_stream_byte_budget_caps_the_seconds_kept(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_stream_buffer_bytes=48000 * 4)  # 1 s of 48 kHz float mono
    publisher = await Publisher.open(http, server)
    await publisher.start(48000, 2)
    (session,) = list(server.app[appkeys.STREAMS].registry)
    assert session.buffer_bytes == 48000 * 4
    await publisher.stop()


async def test_streams_that_would_pass_max_buffer_bytes_are_refused_until_one_ends(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    one = 5 * 48000 * 4  # 5 s of 48 kHz float mono
    server = await start_server(max_buffer_bytes=int(2.5 * one))
    first, second = await Publisher.open(http, server), await Publisher.open(http, server)
    await first.start(48000, 1)
    await second.start(48000, 8)
    third = await Publisher.open(http, server)
    await third.send({"type": "start", "sample_rate": 48000, "channels": 1, "encoding": "pcm_f32le"})
    refused = await third.receive_all()
    assert refused[0]["type"] == "error" and refused[0]["code"] == "buffer_limit", refused
    assert refused[-1] == {"type": "<closed>", "code": 1013}
    await first.stop()
    fourth = await Publisher.open(http, server)
    await fourth.start(48000, 2)  # room again
    await fourth.stop()
    await second.stop()


async def test_an_ended_stream_is_freed_when_its_connection_closes_without_the_collector(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """An ended stream's session, ring buffer and socket are freed by reference counting as soon as its
    connection closes: they were one reference cycle, kept until the garbage collector's next full pass
    (a server's full passes are rare), with every stream that had ended since."""
    server = await start_server()
    refs = []
    gc.collect()
    gc.disable()
    try:
        for stop in (True, False):  # a publisher that stops, and one that just disconnects
            publisher = await Publisher.open(http, server)
            await publisher.start(48000, 1)
            (session,) = list(server.app[appkeys.STREAMS].registry)
            refs.append(weakref.ref(session))
            refs.append(weakref.ref(session._ring))
            await publisher.stream(np.zeros(48000 // 2, np.float32), 48000, chunk_s=0.02)
            if stop:
                await publisher.stop()
            await publisher.close()
            del session
            for _ in range(200):
                if not list(server.app[appkeys.STREAMS].registry):
                    break
                await asyncio.sleep(0.01)
        for _ in range(100):  # the handlers return and aiohttp lets go of the connections
            if all(ref() is None for ref in refs):
                break
            await asyncio.sleep(0.02)
        assert [ref() is None for ref in refs] == [True] * 4
    finally:
        gc.enable()


def _file_pages_kib(pid: int) -> int:
    """``RssFile`` of a process: pages of mapped files (library code) it has touched, KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


async def test_the_server_process_builds_a_first_streams_plans_before_it_serves(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """The event loop's process builds the default plans at 48 and 44.1 kHz and runs a stream's socket code
    (aiohttp's request parser and frame reader, the audio check, the ring buffer) when it starts: a first
    stream there faults in almost no library code (measured: 1.7 MiB of numpy, scipy.sparse and pocketfft
    code without the plans; 192 KiB of aiohttp's and numpy's without the socket code; 4 KiB with both)."""
    proc = server_process("--workers", "1")
    assert proc.proc is not None
    samples = signals.clicks(sr=48000, duration_s=1.0, seed=3).samples.astype(np.float32)
    before = _file_pages_kib(proc.proc.pid)
    publisher = Publisher(await http.ws_connect(proc.url + "/api/v3/stream"), "json")
    await publisher.start(48000)
    await publisher.stream(samples, 48000)
    messages = await publisher.stop()
    added = _file_pages_kib(proc.proc.pid) - before
    assert onset_times(messages), messages  # the stream ran its analysis
    assert added < 64, added


async def test_the_socket_warm_up_runs_aiohttps_reader_to_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up's made-up frames go through aiohttp's reader (so its API is the one it expects): every
    audio message reaches the ring buffer, whole."""
    taken: list[int] = []
    read_bytes = warm_up.RingBuffer.read_bytes

    def noted(ring: RingBuffer, max_frames: int | None = None) -> bytes | bytearray:
        out = read_bytes(ring, max_frames)
        taken.append(len(out))
        return out

    monkeypatch.setattr(warm_up.RingBuffer, "read_bytes", noted)
    warm_up._warm_up(asyncio.get_running_loop(), 48000)
    assert taken == [960 * 4] * warm_up.CHUNKS + [960 * 2] * warm_up.CHUNKS
