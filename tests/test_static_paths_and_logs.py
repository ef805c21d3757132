"""Static paths and the server's log, against a real server process (issue 17, items 5 and 12).

- Any path segment (NUL, control characters, over 255 bytes, anything) gets 200 or 404, never a 500.
- What a client sends never starts a log line of its own.
- A malformed request, or a client gone in the middle of its body, is one WARNING line without a traceback,
  and at most a burst of such lines however many come.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import ServerProcess

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) ")
FORGED = "2001-01-01 00:00:00,000 ERROR server forged-by-client"
BURST = 10  # the client-fault lines logged per minute (server.observability.logs.ClientFaultFilter)
MAX_REQUEST_LINE_BYTES = 8190  # aiohttp's parser refuses a longer request line with 400, before the app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("static") / "data"
    proc = ServerProcess(["--port", "0", "--workers", "1", "--data-dir", str(data_dir)]).start()
    yield proc
    proc.stop()


def get_status(server: ServerProcess, raw_path: str) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        url = URL(server.url + raw_path, encoded=True)
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            body = await resp.read()
            code = ""
            if resp.status >= 400 and resp.content_type == "application/json":
                code = (await resp.json())["error"]["code"]
            assert body
            return resp.status, code

    return asyncio.run(run())


def output_lines(server: ServerProcess) -> list[str]:
    return [line.rstrip("\n") for line in list(server.output)]


def assert_no_forged_or_error_lines(server: ServerProcess) -> None:
    lines = output_lines(server)
    for line in lines:
        assert not line.startswith(FORGED[:10]), line  # a client's text never starts a line
        level = LOG_LINE.match(line)
        assert not (level and level.group(1) == "ERROR") and not line.startswith("Traceback"), line


segments = st.one_of(
    st.text(min_size=1, max_size=40),  # any code point, control characters and NUL included
    st.text(alphabet="\x00\n\r\t\x1b\x7f\u2028\u0085", min_size=1, max_size=5),
    st.integers(250, 2000).map(lambda n: "a" * n),  # around and over NAME_MAX (255 bytes)
    st.integers(60, 600).map(lambda n: "é" * n),  # over 255 bytes in fewer characters
    st.sampled_from(["index.html", "js", "css", "..", ".", "monitor", "favicon.svg"]),
)


@FUZZ
@given(parts=st.lists(segments, min_size=1, max_size=4))
def test_any_static_path_is_200_or_404(server: ServerProcess, parts: list[str]) -> None:
    raw_path = "/" + "/".join(quote(part, safe="", errors="surrogatepass") for part in parts)
    if raw_path.startswith("/api"):
        return
    status, code = get_status(server, raw_path)
    if len(f"GET {raw_path} HTTP/1.1") > MAX_REQUEST_LINE_BYTES:
        assert status == 400, (len(raw_path), status)
    else:
        assert (status, code) in ((200, ""), (404, "not_found")), (raw_path, status)
    assert_no_forged_or_error_lines(server)


@pytest.mark.parametrize("raw_path", [
    "/" + "a" * 256, "/js/" + "b" * 300 + ".js", "/%00", "/index.html%00.js", "/a%0a" + quote(FORGED),
    "/%00%0a" + quote(FORGED), "/" + "x" * 300 + "%0a" + quote(FORGED), "/a%0d%0a" + quote(FORGED),
])
def test_reported_paths_are_404_and_forge_no_log_line(server: ServerProcess, raw_path: str) -> None:
    assert get_status(server, raw_path) == (404, "not_found")
    assert get_status(server, "/") == (200, "")
    assert_no_forged_or_error_lines(server)


def send_raw(port: int, data: bytes, linger_s: float = 0.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if linger_s:
            time.sleep(linger_s)
        else:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\n\r\n",
    b"POST /api/v3/analysis HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00" + FORGED.encode() + b"\r\n\r\n",
]
CUT_SHORT = [  # a body announced, then the client goes away in the middle of it
    b"POST /api/v3/analysis HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 100000\r\n\r\n--b\r\n"
    b"Content-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
    b"POST /api/v3/webrtc/offer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"a\"",
]


def test_client_faults_are_one_warning_line_each_and_rate_limited(
    server_process: Callable[..., ServerProcess]
) -> None:
    server = server_process("--workers", "1")  # its own: the other tests' faults count in the same minute
    port = URL(server.url).port
    assert port is not None
    before = len(output_lines(server))
    for _ in range(15):
        for data in MALFORMED:
            send_raw(port, data)
        for data in CUT_SHORT:
            send_raw(port, data, linger_s=0.05)
    deadline = time.monotonic() + 30
    while sum("client fault" in line for line in output_lines(server)[before:]) < BURST:
        assert time.monotonic() < deadline, output_lines(server)[before:][-20:]
        time.sleep(0.05)
    time.sleep(1.0)  # anything still to come
    lines = output_lines(server)[before:]
    faults = [line for line in lines if "client fault" in line]
    assert len(faults) == BURST, faults  # 90 faults, 10 lines this minute
    for line in faults:
        assert LOG_LINE.match(line) and " WARNING aiohttp.server client fault: " in line, line
    kinds = {line.split("client fault: ")[1].split(":")[0] for line in faults}
    assert kinds & {"BadHttpMessage", "InvalidURLError", "BadStatusLine", "LineTooLong",
                    "InvalidHeader"}, kinds
    assert_no_forged_or_error_lines(server)
    assert get_status(server, "/") == (200, "")
