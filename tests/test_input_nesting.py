"""Deeply nested JSON and msgpack, fuzzed against a real server process: 400 or 1007 ``too_deep`` on every
endpoint that takes a client's structured text (issue 17, item 4), never a 500, a 1011 or a silent close,
and the server goes on serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from server.protocol.codec import MAX_NESTING_DEPTH
from tests.conftest import ServerProcess

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
START = {"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le"}
UPLOAD = {"type": "upload", "filename": "a.wav", "size": 10}
LEAVES = ("1", '"x"', "null", "{}", "[]", "true")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("nesting") / "data"
    proc = ServerProcess(["--port", "0", "--workers", "1", "--data-dir", str(data_dir)]).start()
    yield proc
    proc.stop()


def nested_json(depth: int, pattern: str, leaf: str) -> str:
    """``depth`` levels of arrays (``a``) and objects (``o``), cycling through ``pattern``, round ``leaf``."""
    kinds = [pattern[i % len(pattern)] for i in range(depth)]
    opening = "".join("[" if kind == "a" else '{"k":' for kind in kinds)
    closing = "".join("]" if kind == "a" else "}" for kind in reversed(kinds))
    return opening + leaf + closing


def nested_msgpack(depth: int, pattern: str) -> bytes:
    """The same in msgpack (packed by hand: msgpack's own packer refuses to nest past 511 levels)."""
    kinds = [pattern[i % len(pattern)] for i in range(depth)]
    return b"".join(b"\x91" if kind == "a" else b"\x81\xa1k" for kind in kinds) + b"\xc0"


def msgpack_with(base: dict[str, Any], key: str, packed_value: bytes) -> bytes:
    """``base`` plus ``key`` whose value is already packed, as one msgpack map (fewer than 16 keys)."""
    assert len(base) < 15
    head = bytes([0x80 | (len(base) + 1)])
    return head + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in base.items()) + \
        msgpack.packb(key) + packed_value


def json_with(base: dict[str, Any], key: str, raw_value: str) -> str:
    return json.dumps(base)[:-1] + f', "{key}": {raw_value}}}'


async def http_error(method: str, url: URL, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body["error"]["code"]


async def socket_error(url: URL, first: str | bytes,
                       then: str | bytes | None = None) -> tuple[str, int | None]:
    """Send ``first`` (and ``then``) on a WebSocket; the ``error`` code received and the close code."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        stop = '{"type": "stop"}' if then is not None else None  # ends a stream that refused `then` only
        with contextlib.suppress(ConnectionError):  # the server may have closed already
            for message in (first, then, stop):
                if isinstance(message, str):
                    await ws.send_str(message)
                elif isinstance(message, bytes):
                    await ws.send_bytes(message)
        code = ""
        while True:
            received = await ws.receive(timeout=10)
            if received.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return code, ws.close_code
            text = received.type == aiohttp.WSMsgType.TEXT
            event = json.loads(received.data) if text else msgpack.unpackb(received.data)
            if event["type"] == "error":
                code = event["code"]


def multipart(settings_text: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("settings", settings_text)
    form.add_field("file", b"RIFF" + b"\x00" * 40, filename="a.wav")
    return form


async def every_endpoint(base: URL, text: str, packed: bytes) -> list[tuple[str, tuple[Any, Any]]]:
    """What each endpoint answers to a value nested as in ``text`` (JSON) and ``packed`` (msgpack)."""
    stream, upload = base.with_scheme("ws") / "api/v3/stream", base.with_scheme("ws") / "api/v3/upload"
    return [
        ("analysis settings", await http_error("POST", base / "api/v3/analysis", data=multipart(text))),
        ("offer settings", await http_error("POST", base / "api/v3/webrtc/offer", data=json_with(
            {"type": "offer", "sdp": "v=0"}, "settings", text))),
        ("offer body", await http_error("POST", base / "api/v3/webrtc/offer", data=text)),
        ("stream start", await socket_error(stream, json_with(START, "settings", text))),
        ("stream configure", await socket_error(stream, json.dumps(START),
                                                json_with({"type": "configure"}, "settings", text))),
        ("upload", await socket_error(upload, json_with(UPLOAD, "settings", text))),
        ("stream msgpack", await socket_error(stream.with_query(codec="msgpack"),
                                              msgpack_with(START, "settings", packed))),
        ("upload msgpack", await socket_error(upload.with_query(codec="msgpack"),
                                              msgpack_with(UPLOAD, "settings", packed))),
    ]


EXPECTED = {"analysis settings": (400, "too_deep"), "offer settings": (400, "too_deep"),
            "offer body": (400, "too_deep"), "stream start": ("too_deep", 1007),
            "stream configure": ("too_deep", 1007), "upload": ("too_deep", 1007),
            "stream msgpack": ("too_deep", 1007), "upload msgpack": ("too_deep", 1007)}


def assert_still_serving(server: ServerProcess) -> None:
    async def healthz() -> int:
        async with aiohttp.ClientSession() as http, http.get(URL(server.url) / "healthz") as resp:
            return resp.status

    assert asyncio.run(healthz()) == 200
    assert not [line for line in server.output if "Traceback" in line or " ERROR " in line], \
        list(server.output)[-20:]


@FUZZ  # up to 10,000 levels: 60 KB, under the 64 KiB the analysis `settings` field may hold
@given(depth=st.integers(MAX_NESTING_DEPTH + 1, 10_000), pattern=st.text("ao", min_size=1, max_size=4),
       leaf=st.sampled_from(LEAVES))
def test_nesting_past_the_limit_is_too_deep_everywhere(server: ServerProcess, depth: int, pattern: str,
                                                        leaf: str) -> None:
    answers = asyncio.run(every_endpoint(URL(server.url), nested_json(depth, pattern, leaf),
                                         nested_msgpack(depth, pattern)))
    assert dict(answers) == EXPECTED, (depth, pattern)
    assert_still_serving(server)


def test_the_reported_case_and_the_limit_itself(server: ServerProcess) -> None:
    """About 1,000 levels in 30 KB, as reported; and exactly the limit, which parses (the settings are then
    refused for what they hold, not for their depth)."""
    reported = nested_json(1000, "ao", "1")
    assert 1000 < len(reported) * 3 < 40_000
    answers = asyncio.run(every_endpoint(URL(server.url), reported, nested_msgpack(1000, "ao")))
    assert dict(answers) == EXPECTED
    # Settings MAX_NESTING_DEPTH - 1 deep: inside a message object, the message is exactly at the limit.
    at_limit = '{"threshold":' + nested_json(MAX_NESTING_DEPTH - 2, "a", "1") + "}"
    answers = asyncio.run(every_endpoint(URL(server.url), at_limit, b"\x81\xa1k" + nested_msgpack(
        MAX_NESTING_DEPTH - 2, "a")))
    refused_for_content = {name: answer for name, answer in answers if "too_deep" in answer}
    assert refused_for_content == {}, answers
    assert_still_serving(server)


def test_msgpack_errors_say_what_is_wrong(server: ServerProcess) -> None:
    """A msgpack library error with no text of its own still gets a message (item 15)."""
    async def run() -> list[dict[str, Any]]:
        url = (URL(server.url) / "api/v3/stream").with_scheme("ws").with_query(codec="msgpack")
        errors = []
        async with aiohttp.ClientSession() as http:
            for payload in (b"\x91" * 3000 + b"\xc0", b"\xc1", b"\x92\x01"):
                async with http.ws_connect(url) as ws:
                    await ws.send_bytes(payload)
                    errors.append(msgpack.unpackb((await ws.receive(timeout=30)).data))
        return errors

    for error in asyncio.run(run()):
        assert error["type"] == "error" and error["code"] in ("too_deep", "bad_msgpack"), error
        assert len(error["message"]) > len("invalid msgpack: "), error


def test_a_nesting_depth_is_counted_without_recursion() -> None:
    from server.protocol.codec import nesting_depth

    value: Any = 1
    for _ in range(100_000):
        value = [value]
    assert nesting_depth(value) == MAX_NESTING_DEPTH + 1  # it stops counting past the limit
    assert nesting_depth({"a": [1, {"b": []}]}) == 4  # an empty array is a level too
    assert nesting_depth("text") == 0
    assert nesting_depth((1, (2,), {"c": ()})) == 3  # tuples (msgpack's arrays may be) and a nested map
    assert nesting_depth(MappingProxyType({"a": [1]})) == 2  # a Mapping that is not a dict counts too


def test_a_first_start_message_leaves_no_abstract_class_caches() -> None:
    """Counting a client message's depth tells JSON's values by their type: an isinstance check against
    Mapping would walk every registered subclass of it for each type it has not seen and cache the answer
    in each (162 KiB after the first start message on a fresh import of the server, tracemalloc)."""
    script = (
        "import gc, tracemalloc\n"
        "import server.app\n"
        "from server.protocol.codec import parse_json\n"
        "gc.collect()\n"
        "tracemalloc.start()\n"
        "before = tracemalloc.get_traced_memory()[0]\n"
        "value = parse_json(b'{\"type\": \"start\", \"sample_rate\": 48000, \"channels\": 1, "
        "\"encoding\": \"pcm_f32le\", \"settings\": "
        "{\"beats\": true, \"a\": 0.5, \"b\": null, \"c\": [1]}}')\n"
        "print(tracemalloc.get_traced_memory()[0] - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(result.stdout.split()[-1]) < 16 * 1024  # was ~166,000 bytes
