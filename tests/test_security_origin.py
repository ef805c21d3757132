"""The Origin allowlist and the token specification at start-up, on real servers (issue 17, items 10 and 11).

- DNS rebinding (the attacker's name in both ``Origin`` and ``Host``), an ``https`` page on an ``http``
  server, and a cross-site form ``POST`` are refused with 403 ``origin_not_allowed``; nothing is created.
- A configured allowlist means it: the server's own origin is then refused unless listed.
- ``--tokens`` that names no token (``;;``, a blank) stops the server with one line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from server import appkeys
from server.exceptions import ConfigError
from server.security.origin import origin_allowed
from server.security.tokens import TokenTable
from tests.conftest import REPO, StartServer

WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def form() -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", b"RIFF" + b"\x00" * 64, filename="x.wav")
    return data


async def answer(http: aiohttp.ClientSession, method: str, server: TestServer, path: str, origin: str | None,
                 host: str | None = None, **kwargs: Any) -> tuple[int, str | None]:
    headers = dict(kwargs.pop("headers", {}))
    if origin is not None:
        headers["Origin"] = origin
    if host is not None:
        headers["Host"] = host
    async with http.request(method, server.make_url(path), headers=headers, **kwargs) as resp:
        body = await resp.read()
        code = json.loads(body)["error"]["code"] if resp.status >= 400 else None
        return resp.status, code


async def test_dns_rebinding_wrong_scheme_and_cross_site_posts_are_refused(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    port = server.port
    rebound = {"origin": f"http://evil.example:{port}", "host": f"evil.example:{port}"}
    refused = (403, "origin_not_allowed")
    # DNS rebinding: the attacker's name resolves to this server; Origin and Host agree.
    assert await answer(http, "GET", server, "/api/v3/stream", headers=WS_HEADERS, **rebound) == refused
    assert await answer(http, "GET", server, "/api/v3/upload", headers=WS_HEADERS, **rebound) == refused
    assert await answer(http, "POST", server, "/api/v3/analysis", data=form(), **rebound) == refused
    # An https page is not this http server's origin, whatever the host and port.
    https_page = {"origin": f"https://127.0.0.1:{port}"}
    assert await answer(http, "GET", server, "/api/v3/stream", headers=WS_HEADERS, **https_page) == refused
    assert await answer(http, "POST", server, "/api/v3/analysis", data=form(), **https_page) == refused
    # A cross-site form (or fetch) posting a file or an offer: refused before anything is stored.
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
        assert await answer(http, "POST", server, "/api/v3/analysis", origin, data=form()) == refused
        assert await answer(http, "POST", server, "/api/v3/webrtc/offer", origin,
                            data=b'{"type": "offer", "sdp": "v=0"}') == refused
    assert await server.app[appkeys.JOBS].store.unfinished() == []  # no task was created
    assert list((server.app[appkeys.CONFIG].data_dir / "uploads").iterdir()) == []
    # Reading is not a state change: a cross-site GET is answered (tokens guard what it may read).
    assert (await answer(http, "GET", server, "/api/v3/streams", "http://evil.example"))[0] == 200
    # The server's own pages: same scheme, IP address or localhost, same port.
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        host = own.removeprefix("http://")
        status, _ = await answer(http, "POST", server, "/api/v3/analysis", own, host=host, data=form())
        assert status == 202, own
        async with http.ws_connect(server.make_url("/api/v3/stream"), headers={"Origin": own, "Host": host}):
            pass
    # No Origin: not a browser, not checked.
    assert (await answer(http, "POST", server, "/api/v3/analysis", None, data=form()))[0] == 202


async def test_expect_continue_is_refused_from_the_origin_before_the_body(
    start_server: StartServer
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"POST /api/v3/analysis HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                 "Origin: http://evil.example\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 403"), status_line


async def test_a_configured_allowlist_means_it(start_server: StartServer,
                                               http: aiohttp.ClientSession) -> None:
    server = await start_server(allowed_origins="https://app.example, http://localhost:3000")
    own = f"http://127.0.0.1:{server.port}"
    refused = (403, "origin_not_allowed")
    assert await answer(http, "POST", server, "/api/v3/analysis", own, data=form()) == refused
    assert await answer(http, "POST", server, "/api/v3/analysis", "http://app.example",
                        data=form()) == refused
    assert await answer(http, "POST", server, "/api/v3/analysis", "https://app.example.evil",
                        data=form()) == refused
    for listed in ("https://app.example", "HTTPS://APP.example:443", "http://localhost:3000"):
        assert (await answer(http, "POST", server, "/api/v3/analysis", listed, data=form()))[0] == 202, listed


@pytest.mark.parametrize("spec", ["evil.example", "ftp://a.example", "https://a.example/path"])
async def test_an_allowlist_entry_that_is_no_origin_stops_the_server(start_server: StartServer,
                                                                     spec: str) -> None:
    with pytest.raises(ConfigError, match="allowed_origins"):
        await start_server(allowed_origins=spec)


names = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=names, port=st.integers(1, 65535), scheme=st.sampled_from(["http", "https"]),
       page_scheme=st.sampled_from(["http", "https", "ws", "file", "null"]))
def test_without_an_allowlist_only_an_unreboundable_same_origin_passes(name: str, port: int, scheme: str,
                                                                      page_scheme: str) -> None:
    host = f"{name}:{port}"
    origin = f"{page_scheme}://{host}" if page_scheme != "null" else "null"
    accepted = origin_allowed(origin, host, scheme, frozenset())
    assert accepted == (name == "localhost" and page_scheme == scheme), (origin, host, scheme)
    for address in ("127.0.0.1", "192.168.1.20", "[::1]"):
        same = f"{scheme}://{address}:{port}"
        assert origin_allowed(same, f"{address}:{port}", scheme, frozenset())


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "run.py"), "--port", "0", "--workers", "1", *args],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "env"), [
    (["--tokens", ";;"], None), (["--tokens", " "], None), (["--tokens", " ; ;\t"], None),
    ([], {"TRANSIENT_TOKENS": ";"}), (["--allowed-origins", "evil.example"], None),
    (["--ice-servers", "bogus:x"], None), (["--ice-servers", "turn:turn.example.org"], None),
])
def test_an_option_that_opens_the_server_by_mistake_or_cannot_work_stops_it(
        args: list[str], env: dict[str, str] | None) -> None:
    done = run_server(*args, env=env)
    assert done.returncode == 2, done
    assert "serving on" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), done.stderr  # no traceback
    assert any(name in lines[0] for name in ("tokens", "allowed_origins", "ice_servers"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="; \t\n", min_size=1, max_size=20))
def test_any_specification_of_separators_alone_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="names no token"):
        TokenTable.parse(spec)
