"""OSC output through the real server to real UDP OSC receivers: opted-in streams only, message and bundle
layouts, opting in and out with ``configure``, unknown targets, unreachable targets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from server import appkeys
from testkit import signals
from testkit.rhythm_signals import beat_times, drum_track
from tests.conftest import StartServer
from tests.stream_client import Publisher, of_type

RECEIVE_TIMEOUT_S = 30.0


class OscReceiver(asyncio.DatagramProtocol):
    """A real OSC server on a free UDP port of 127.0.0.1: every datagram, parsed with python-osc."""

    def __init__(self) -> None:
        self.packets: asyncio.Queue[OscMessage | OscBundle] = asyncio.Queue()
        self.transport: asyncio.BaseTransport | None = None

    @classmethod
    async def open(cls) -> OscReceiver:
        loop = asyncio.get_running_loop()
        receiver = cls()
        await loop.create_datagram_endpoint(lambda: receiver, local_addr=("127.0.0.1", 0))
        return receiver

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's UDPTransport does not subclass asyncio.DatagramTransport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        packet = OscBundle(data) if OscBundle.dgram_is_bundle(data) else OscMessage(data)
        self.packets.put_nowait(packet)

    async def take(self, count: int, timeout_s: float = RECEIVE_TIMEOUT_S) -> list[OscMessage | OscBundle]:
        return [await asyncio.wait_for(self.packets.get(), timeout_s) for _ in range(count)]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def receivers() -> Any:
    opened: list[OscReceiver] = []

    async def open_receiver() -> OscReceiver:
        receiver = await OscReceiver.open()
        opened.append(receiver)
        return receiver

    yield open_receiver
    for receiver in opened:
        receiver.close()
    await asyncio.sleep(0.01)  # uvloop closes a UDP handle on the next loop iteration


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def publish(http: aiohttp.ClientSession, server: Any, samples: np.ndarray, sample_rate: int,
                  settings: dict[str, Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate, settings=settings)
    await publisher.stream(samples, sample_rate)
    return started["stream_id"], await publisher.stop()


def type_tags(message: OscMessage) -> bytes:
    return next(t for t in message.dgram.split(b"\x00") if t.startswith(b","))


def assert_message_matches(message: OscMessage, onset: dict[str, Any], address: str = "/transient/onset"
                           ) -> None:
    assert message.address == address
    assert type_tags(message) == b",fs"  # the value first, the stream id last; no float64
    strength, stream_id = message.params
    assert stream_id == onset["stream_id"]
    assert strength == pytest.approx(onset["strength"], rel=1e-6)  # a float32


async def test_onsets_of_opted_in_streams_reach_their_targets_as_messages_and_bundles(
    start_server: StartServer, http: aiohttp.ClientSession, receivers: Any
) -> None:
    lights, video = await receivers(), await receivers()
    server = await start_server(osc_targets=f"lights=127.0.0.1:{lights.port}, "
                                            f"video=127.0.0.1:{video.port}/bundle+50")
    signal = signals.drums(sr=44100, duration_s=2.5, seed=21)
    (opted_id, opted), (other_id, other) = await asyncio.gather(
        publish(http, server, signal.samples, 44100, {"osc": ["lights", "video"], "beats": False}),
        publish(http, server, signal.samples, 44100))
    onsets = of_type(opted, "onset")
    assert len(onsets) >= 4 and len(of_type(other, "onset")) == len(onsets)
    assert of_type(opted, "error") == []

    messages = await lights.take(len(onsets))
    bundles = await video.take(len(onsets))
    for onset, message, bundle in zip(onsets, messages, bundles, strict=True):
        assert isinstance(message, OscMessage)
        assert_message_matches(message, onset)
        assert isinstance(bundle, OscBundle) and bundle.num_contents == 1
        assert_message_matches(bundle.content(0), onset)
        assert bundle.timestamp == pytest.approx(onset["wall_time"] + 0.050, abs=1e-5)
    await asyncio.sleep(0.2)  # anything else on its way would have arrived by now on loopback
    assert lights.packets.empty() and video.packets.empty()  # nothing from the other stream
    assert other_id != opted_id
    counters = server.app[appkeys.STREAMS].osc.counters()
    assert counters == {"lights": {"sent": len(onsets), "dropped": 0},
                        "video": {"sent": len(onsets), "dropped": 0}}


async def test_configure_opts_a_running_stream_in_and_out(
    start_server: StartServer, http: aiohttp.ClientSession, receivers: Any
) -> None:
    lights = await receivers()
    server = await start_server(osc_targets=f"lights=127.0.0.1:{lights.port}", status_interval_s=0.05)
    sample_rate = 16000
    clicks = signals.clicks(sr=sample_rate, duration_s=3.0, seed=3, gap_s=0.3).samples
    third = len(clicks) // 3
    publisher = await Publisher.open(http, server)
    started = await publisher.start(sample_rate, settings={"beats": False})
    assert started["settings"]["osc"] == []
    messages: list[dict[str, Any]] = []

    async def stream_then_wait(part: np.ndarray, end: int) -> None:
        """Send ``part``, then read until the server has analysed everything up to ``end``."""
        await publisher.stream(part, sample_rate)
        while True:
            messages.append(await publisher.receive())
            if messages[-1]["type"] == "status" and messages[-1]["analysed_s"] >= end / sample_rate:
                return

    await stream_then_wait(clicks[:third], third)
    await publisher.send({"type": "configure", "settings": {"osc": ["lights"]}})
    await stream_then_wait(clicks[third:2 * third], 2 * third)
    await publisher.send({"type": "configure", "settings": {"osc": []}})
    await publisher.stream(clicks[2 * third:], sample_rate)
    messages += await publisher.stop()

    configured = of_type(messages, "configured")
    assert [c["settings"]["osc"] for c in configured] == [["lights"], []]
    # An onset goes to OSC when the stream is opted in at the moment it is reported, which is after its
    # audio and the look-ahead arrived: find the onsets reported between the two configure replies.
    first, second = messages.index(configured[0]), messages.index(configured[1])
    opted = [m for m in messages[first:second] if m["type"] == "onset"]
    everything = of_type(messages, "onset")
    assert 0 < len(opted) < len(everything)
    for onset, message in zip(opted, await lights.take(len(opted)), strict=True):
        assert isinstance(message, OscMessage)
        assert_message_matches(message, onset)
    await asyncio.sleep(0.2)
    assert lights.packets.empty()


async def test_unknown_target_names_are_settings_errors(
    start_server: StartServer, http: aiohttp.ClientSession, receivers: Any
) -> None:
    lights = await receivers()
    server = await start_server(osc_targets=f"lights=127.0.0.1:{lights.port}")

    publisher = await Publisher.open(http, server)
    await publisher.send({"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le",
                          "settings": {"osc": ["lights", "stage"]}})
    messages = await publisher.receive_all()
    assert messages[0]["type"] == "error" and messages[0]["code"] == "bad_settings"
    assert "'stage'" in messages[0]["message"] and "lights" in messages[0]["message"]
    assert messages[-1] == {"type": "<closed>", "code": 1007}

    publisher = await Publisher.open(http, server)
    await publisher.send({"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le",
                          "settings": {"osc": "lights"}})  # a name, not a list of names
    messages = await publisher.receive_all()
    assert messages[0]["code"] == "bad_settings" and messages[-1]["code"] == 1007

    publisher = await Publisher.open(http, server)
    await publisher.start(16000, settings={"osc": ["lights"]})
    await publisher.send({"type": "configure", "settings": {"osc": ["nowhere"], "threshold": 3.0}})
    error = (await publisher.receive_until("error"))[-1]
    assert error["code"] == "bad_settings" and "'nowhere'" in error["message"]
    await publisher.send({"type": "configure", "settings": {}})
    configured = (await publisher.receive_until("configured"))[-1]
    assert configured["settings"]["osc"] == ["lights"]  # the rejected change never applied
    assert configured["settings"]["threshold"] == 1.0
    assert (await publisher.stop())[-1]["code"] == 1000


async def test_without_targets_any_name_is_refused(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    publisher = await Publisher.open(http, server)
    await publisher.send({"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le",
                          "settings": {"osc": ["lights"]}})
    messages = await publisher.receive_all()
    assert messages[0]["code"] == "bad_settings" and "none are configured" in messages[0]["message"]
    assert messages[-1]["code"] == 1007


async def test_unreachable_and_unresolvable_targets_never_hold_up_the_stream(
    start_server: StartServer, http: aiohttp.ClientSession, receivers: Any
) -> None:
    lights = await receivers()
    closed_port = free_udp_port()  # nothing listens: the kernel answers with ICMP port unreachable
    server = await start_server(osc_targets=f"gone=127.0.0.1:{closed_port},void=nowhere.invalid:9000,"
                                            f"lights=127.0.0.1:{lights.port}")
    signal = signals.drums(sr=22050, duration_s=2.0, seed=5)
    _, messages = await publish(http, server, signal.samples, 22050,
                                {"osc": ["gone", "void", "lights"], "beats": False})
    onsets = of_type(messages, "onset")
    assert len(onsets) >= 3 and messages[-1]["code"] == 1000
    for onset, message in zip(onsets, await lights.take(len(onsets)), strict=True):
        assert isinstance(message, OscMessage)
        assert_message_matches(message, onset)
    counters = server.app[appkeys.STREAMS].osc.counters()
    assert counters["void"] == {"sent": 0, "dropped": len(onsets)}  # `.invalid` never resolves
    assert counters["gone"]["sent"] + counters["gone"]["dropped"] == len(onsets)
    assert counters["lights"] == {"sent": len(onsets), "dropped": 0}


async def test_bands_beats_and_tempo_under_each_targets_prefix(
    start_server: StartServer, http: aiohttp.ClientSession, receivers: Any
) -> None:
    desk, td = await receivers(), await receivers()
    # The 10 s track goes unpaced: room for all of it, so no audio is dropped on a busy machine (a drop
    # restarts the rhythm, and the meter is then not known again before the end).
    server = await start_server(osc_targets=f"desk=127.0.0.1:{desk.port}@/rig/desk, "
                                            f"td=127.0.0.1:{td.port}/bundle", max_buffer_s=20.0)
    track = drum_track(beat_times([(120.0, 10.0)]), seed=44)
    _, messages = await publish(http, server, track.audio, track.sample_rate, {"osc": ["desk", "td"]})
    onsets, beats = of_type(messages, "onset"), of_type(messages, "beat")
    assert len(onsets) >= 10 and len(beats) >= 8

    placed = [b for b in beats if "bar_position" in b]
    assert placed, "the meter was never known"
    # Without bundles: per onset /onset then /onset/BAND, per beat /beat (then /bar once the meter is
    # known) then /tempo, in event order.
    got = await desk.take(2 * len(onsets) + 2 * len(beats) + len(placed))
    assert all(isinstance(m, OscMessage) for m in got)
    by_address: dict[str, list[OscMessage]] = {}
    for m in got:
        assert isinstance(m, OscMessage)
        by_address.setdefault(m.address, []).append(m)
        assert set(type_tags(m)[1:]) <= set(b"ifs") and m.params[-1] == onsets[0]["stream_id"]
    for onset, message in zip(onsets, by_address["/rig/desk/onset"], strict=True):
        assert_message_matches(message, onset, "/rig/desk/onset")
    for band in ("low", "mid", "high"):
        mine = [o for o in onsets if o["band"] == band]
        assert len(by_address.get(f"/rig/desk/onset/{band}", [])) == len(mine)
        for onset, message in zip(mine, by_address.get(f"/rig/desk/onset/{band}", []), strict=True):
            assert_message_matches(message, onset, f"/rig/desk/onset/{band}")
    assert [m.params for m in by_address["/rig/desk/beat"]] == [[1, b["stream_id"]] for b in beats]
    assert [m.params for m in by_address["/rig/desk/bar"]] == [[b["bar_position"], b["stream_id"]]
                                                                for b in placed]
    for beat, tempo in zip(beats, by_address["/rig/desk/tempo"], strict=True):
        assert type_tags(tempo) == b",ffs"
        assert tempo.params[0] == pytest.approx(beat["bpm"], rel=1e-6)
        assert tempo.params[1] == pytest.approx(beat["confidence"], rel=1e-5)

    # With bundles: one bundle per event holding its messages, tagged with the event's wall time.
    bundles = await td.take(len(onsets) + len(beats))
    addresses = sorted(tuple(b.content(i).address for i in range(b.num_contents))
                       for b in bundles if isinstance(b, OscBundle))
    assert len(addresses) == len(onsets) + len(beats)
    assert addresses.count(("/transient/beat", "/transient/tempo")) == len(beats) - len(placed)
    assert addresses.count(("/transient/beat", "/transient/bar", "/transient/tempo")) == len(placed)
    for band in ("low", "mid", "high"):
        assert addresses.count(("/transient/onset", f"/transient/onset/{band}")) == \
            len([o for o in onsets if o["band"] == band])
