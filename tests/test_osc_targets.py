"""OSC target configuration and packet layout: pure functions."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from server.config import parse_config
from server.events.osc import (
    OscSender,
    OscTarget,
    beat_messages,
    bundle_of,
    onset_messages,
    parse_host_port,
    parse_targets,
)
from server.exceptions import SettingsError

REPO = Path(__file__).resolve().parent.parent
NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def test_targets_parse_with_options_and_ipv6() -> None:
    targets = parse_targets(" lights=10.0.0.5:9000 ,video=[::1]:7000/bundle, "
                            "show-1=desk.local:53000/bundle+25.5@/rig/show_1,td=127.0.0.1:7001@/td")
    assert targets == {
        "lights": OscTarget("lights", "10.0.0.5", 9000),
        "video": OscTarget("video", "::1", 7000, bundle=True, delay_ms=0.0),
        "show-1": OscTarget("show-1", "desk.local", 53000, bundle=True, delay_ms=25.5, prefix="/rig/show_1"),
        "td": OscTarget("td", "127.0.0.1", 7001, prefix="/td"),
    }
    assert targets["lights"].prefix == "/transient"
    assert parse_targets("") == {} and parse_targets(" , ") == {}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("lights", "expected NAME=HOST:PORT"),
        ("=1.2.3.4:9000", "the name must be"),
        ("a b=1.2.3.4:9000", "the name must be"),
        ("lights=1.2.3.4", "expected HOST:PORT"),
        ("lights=1.2.3.4:0", "from 1 to 65535"),
        ("lights=1.2.3.4:70000", "from 1 to 65535"),
        ("lights=1.2.3.4:port", "from 1 to 65535"),
        ("lights=:9000", "the host is empty"),
        ("lights=::1:9000", "in brackets"),
        ("lights=[::1]9000", "[ADDRESS]:PORT"),
        ("lights=1.2.3.4:9000/loud", "the only option"),
        ("lights=1.2.3.4:9000/bundle+soon", "the only option"),
        ("lights=1.2.3.4:9000/bundle+20000", "at most"),
        ("lights=1.2.3.4:9000,lights=1.2.3.5:9000", "named twice"),
        ("lights=1.2.3.4:9000@rig", "address prefix"),
        ("lights=1.2.3.4:9000@/rig/", "address prefix"),
        ("lights=1.2.3.4:9000@/r*g", "address prefix"),
        ("lights=1.2.3.4:9000@/a b", "address prefix"),
        ("lights=1.2.3.4:9000@", "address prefix"),
    ],
)
def test_bad_target_specs_name_the_problem(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_targets(spec)
    assert fragment in str(info.value)


def test_host_port_for_the_command_line() -> None:
    assert parse_host_port("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_host_port("[fe80::1]:1") == ("fe80::1", 1)
    assert parse_host_port("localhost:65535") == ("localhost", 65535)


@pytest.mark.parametrize("spec", ["x=1.2.3.4", "x=1.2.3.4:0", "a=1.2.3.4:1,a=1.2.3.4:2",
                                  "x=1.2.3.4:9000@/a/"])
def test_a_malformed_option_stops_the_real_server_with_one_line_and_status_2(spec: str) -> None:
    # docs/protocol.md, OSC output: a malformed value stops the server at start-up with a message naming the
    # entry; Command line: failures are one line on stderr, never a traceback (it was a ValueError's, exit 1).
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "--port", "0", "--workers", "1",
                           "--osc-targets", spec], cwd=REPO, env=dict(os.environ), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: osc_targets: OSC target "), done.stderr
    assert "serving on" not in done.stdout


def test_the_server_option_and_environment_variable_name_the_targets() -> None:
    config = parse_config(["--osc-targets", "a=127.0.0.1:9000"], environ={})
    assert OscSender.from_spec(config.osc_targets).names == {"a"}
    config = parse_config([], environ={"TRANSIENT_OSC_TARGETS": "b=127.0.0.1:9001/bundle"})
    assert OscSender.from_spec(config.osc_targets).targets["b"].bundle


def test_check_names_only_configured_targets() -> None:
    sender = OscSender(parse_targets("lights=127.0.0.1:9000,video=127.0.0.1:9001"))
    sender.check(["lights", "video"])
    sender.check([])
    with pytest.raises(SettingsError) as info:
        sender.check(["lights", "stage"])
    assert info.value.name == "osc" and info.value.value == "stage"
    assert "lights, video" in str(info.value)


def type_tags(data: bytes) -> bytes:
    return next(t for t in data.split(b"\x00") if t.startswith(b","))


def test_message_layouts_use_only_int_float_and_string() -> None:
    plain, low = onset_messages("/rig", "s1", 2.25, "low")
    assert plain.startswith(b"/rig/onset\x00\x00,fs\x00") and len(plain) % 4 == 0
    assert OscMessage(plain).address == "/rig/onset" and OscMessage(plain).params == [2.25, "s1"]
    assert OscMessage(low).address == "/rig/onset/low" and OscMessage(low).params == [2.25, "s1"]
    assert onset_messages("/t", "s1", 1.0, None) == [onset_messages("/t", "s1", 1.0, "mid")[0]]
    beat, tempo = beat_messages("/t", "s1", 128.0, 0.75)
    assert OscMessage(beat).address == "/t/beat" and OscMessage(beat).params == [1, "s1"]
    assert OscMessage(tempo).address == "/t/tempo" and OscMessage(tempo).params == [128.0, 0.75, "s1"]
    placed = beat_messages("/t", "s1", 128.0, 0.75, 3)
    assert [placed[0], placed[2]] == [beat, tempo]
    bar = placed[1]
    assert OscMessage(bar).address == "/t/bar" and OscMessage(bar).params == [3, "s1"]
    for data in (plain, low, beat, bar, tempo):
        assert set(type_tags(data)[1:]) <= set(b"ifs")  # no d (float64), no t, no b
        assert type_tags(data).endswith(b"s")  # the stream id last, the value first


def test_bundle_time_tag_is_ntp_of_the_unix_time() -> None:
    messages = onset_messages("/transient", "s1", 1.0, "high")
    data = bundle_of(messages, 1_700_000_000.75)
    assert data[:8] == b"#bundle\x00"
    seconds, fraction = struct.unpack(">II", data[8:16])
    assert seconds == 1_700_000_000 + NTP_UNIX_OFFSET_S
    assert fraction == 3 * 2**30  # 0.75 of 2**32
    assert struct.unpack(">I", data[16:20])[0] == len(messages[0])
    bundle = OscBundle(data)
    assert bundle.num_contents == 2
    assert [bundle.content(i).address for i in range(2)] == ["/transient/onset", "/transient/onset/high"]
    assert bundle.content(1).params == [1.0, "s1"]
