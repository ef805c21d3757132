"""OSC target configuration and packet layout: pure functions."""

from __future__ import annotations

import struct

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from server.config import parse_config
from server.events.osc import OscSender, OscTarget, bundle_of, onset_message, parse_host_port, parse_targets
from server.exceptions import SettingsError

NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def test_targets_parse_with_options_and_ipv6() -> None:
    targets = parse_targets(" lights=10.0.0.5:9000 ,video=[::1]:7000/bundle, "
                            "show-1=desk.local:53000/bundle+25.5,")
    assert targets == {
        "lights": OscTarget("lights", "10.0.0.5", 9000),
        "video": OscTarget("video", "::1", 7000, bundle=True, delay_ms=0.0),
        "show-1": OscTarget("show-1", "desk.local", 53000, bundle=True, delay_ms=25.5),
    }
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


def test_onset_message_layout() -> None:
    data = onset_message("s1", 1.5, 2.25, 1_700_000_000.123456)
    assert data.startswith(b"/transient/onset\x00\x00\x00\x00,sdfd\x00\x00\x00")
    assert len(data) % 4 == 0
    message = OscMessage(data)
    assert message.address == "/transient/onset"
    assert message.params == ["s1", 1.5, 2.25, 1_700_000_000.123456]  # doubles keep microseconds


def test_bundle_time_tag_is_ntp_of_the_unix_time() -> None:
    message = onset_message("s1", 0.5, 1.0, 1_700_000_000.25)
    data = bundle_of(message, 1_700_000_000.75)
    assert data[:8] == b"#bundle\x00"
    seconds, fraction = struct.unpack(">II", data[8:16])
    assert seconds == 1_700_000_000 + NTP_UNIX_OFFSET_S
    assert fraction == 3 * 2**30  # 0.75 of 2**32
    assert struct.unpack(">I", data[16:20])[0] == len(message) and data[20:] == message
    bundle = OscBundle(data)
    assert bundle.num_contents == 1 and bundle.content(0).params == ["s1", 0.5, 1.0, 1_700_000_000.25]
