"""Tokens and rights, the WebSocket Origin check, unguessable ids, the exposure warning: on a real server."""

from __future__ import annotations

import json
import logging
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.security.origin import normalise, origin_allowed
from server.security.tokens import Right, TokenTable
from tests.conftest import StartServer
from tests.stream_client import Publisher

TOKENS = "pub:publisher-secret-1:publish;sub:subscriber-secret-2:subscribe;all:all-rights-secret-3:publish," \
         "subscribe,analyse"
PUB, SUB, ALL = "publisher-secret-1", "subscriber-secret-2", "all-rights-secret-3"
START = {"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def status_and_error(http: aiohttp.ClientSession, method: str, url: object,
                           **kwargs: object) -> tuple[int, str | None, aiohttp.ClientResponse]:
    async with http.request(method, str(url), **kwargs) as resp:  # type: ignore[arg-type]
        body = await resp.read()
        code = None
        if resp.status >= 400:
            assert resp.content_type == "application/json"
            code = json.loads(body)["error"]["code"]
        return resp.status, code, resp


@pytest.fixture
async def guarded(start_server: StartServer) -> TestServer:
    return await start_server(tokens=TOKENS)


async def test_every_api_endpoint_needs_a_token_but_health_and_pages_do_not(
    guarded: TestServer, http: aiohttp.ClientSession
) -> None:
    for path in ("/healthz", "/readyz", "/"):
        status, _, _ = await status_and_error(http, "GET", guarded.make_url(path))
        assert status == 200, path
    for method, path in (("GET", "/api/v3/streams"), ("GET", "/api/v3/analysis/" + "0" * 32),
                         ("POST", "/api/v3/analysis"), ("POST", "/api/v3/webrtc/offer"), ("GET", "/metrics"),
                         ("GET", "/api/v3/nothing-here"), ("GET", "/api/v3/stream")):
        status, code, resp = await status_and_error(http, method, guarded.make_url(path))
        assert (status, code) == (401, "unauthorized"), path
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        status, code, _ = await status_and_error(http, method, guarded.make_url(path),
                                                 headers=bearer("wrong-secret"))
        assert (status, code) == (401, "unauthorized"), path


async def test_rights_decide_what_a_token_may_do(guarded: TestServer, http: aiohttp.ClientSession) -> None:
    streams = guarded.make_url("/api/v3/streams")
    assert (await status_and_error(http, "GET", streams, headers=bearer(SUB)))[0] == 200
    assert (await status_and_error(http, "GET", streams, headers=bearer(PUB)))[:2] == (403, "forbidden")
    assert (await status_and_error(http, "GET", streams, params={"token": SUB}))[0] == 200
    task = guarded.make_url("/api/v3/analysis/" + "0" * 32)
    assert (await status_and_error(http, "GET", task, headers=bearer(SUB)))[:2] == (403, "forbidden")
    assert (await status_and_error(http, "GET", task, headers=bearer(ALL)))[:2] == (404, "not_found")
    form = aiohttp.FormData()
    form.add_field("file", b"RIFF", filename="x.wav")
    assert (await status_and_error(http, "POST", guarded.make_url("/api/v3/analysis"), data=form,
                                   headers=bearer(PUB)))[:2] == (403, "forbidden")
    # Any valid token reads the metrics; an unknown API path then answers 404, not 401.
    assert (await status_and_error(http, "GET", guarded.make_url("/metrics"), headers=bearer(PUB)))[0] == 200
    assert (await status_and_error(http, "GET", guarded.make_url("/api/v3/nothing-here"),
                                   headers=bearer(PUB)))[0] == 404


async def handshake_status(http: aiohttp.ClientSession, url: object, **kwargs: object) -> int:
    try:
        ws = await http.ws_connect(str(url), **kwargs)  # type: ignore[arg-type]
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_websockets_take_the_token_as_a_query_parameter_or_header(
    guarded: TestServer, http: aiohttp.ClientSession
) -> None:
    stream = guarded.make_url("/api/v3/stream")
    assert await handshake_status(http, stream) == 401
    assert await handshake_status(http, stream.with_query(token="nope")) == 401
    assert await handshake_status(http, stream.with_query(token=SUB)) == 403
    assert await handshake_status(http, guarded.make_url("/api/v3/upload").with_query(token=PUB)) == 403
    ws = await http.ws_connect(str(stream.with_query(token=PUB)))
    await ws.send_str(json.dumps(START))
    started = json.loads((await ws.receive(timeout=30)).data)
    assert started["type"] == "started"
    events = guarded.make_url(f"/api/v3/streams/{started['stream_id']}/events")
    assert await handshake_status(http, events.with_query(token=PUB)) == 403
    watcher = await http.ws_connect(str(events), headers=bearer(SUB))
    assert json.loads((await watcher.receive(timeout=30)).data)["type"] == "subscribed"
    await ws.send_str(json.dumps({"type": "stop"}))
    while (await ws.receive(timeout=30)).type != aiohttp.WSMsgType.CLOSE:
        pass
    await watcher.close()


async def test_websocket_origin_must_be_the_same_host_or_allowed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    url = server.make_url("/api/v3/stream")
    same = f"http://127.0.0.1:{server.port}"
    assert await handshake_status(http, url, origin="http://evil.example") == 403
    assert await handshake_status(http, url, origin=f"http://127.0.0.1:{server.port + 1}") == 403
    assert await handshake_status(http, url, origin="null") == 403
    assert await handshake_status(http, url, origin=same) == 101
    assert await handshake_status(http, url) == 101  # no Origin: not a browser
    evil = "http://evil.example"
    assert await handshake_status(http, server.make_url("/api/v3/upload"), origin=evil) == 403
    async with http.get(server.make_url("/api/v3/streams"), headers={"Origin": evil}) as resp:
        assert resp.status == 200  # plain HTTP is not a WebSocket hijack; tokens guard it

    listed = await start_server(allowed_origins="https://app.example, https://other.example:8443/")
    url = listed.make_url("/api/v3/stream")
    assert await handshake_status(http, url, origin="https://app.example") == 101
    assert await handshake_status(http, url, origin="https://APP.example:443") == 101
    assert await handshake_status(http, url, origin="https://other.example:8443") == 101
    assert await handshake_status(http, url, origin=f"http://127.0.0.1:{listed.port}") == 403
    status, code, _ = await status_and_error(http, "GET", url, headers={
        "Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (status, code) == (403, "origin_not_allowed")


async def test_stream_ids_are_unguessable(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server()
    ids = []
    for _ in range(8):
        publisher = await Publisher.open(http, server)
        started = await publisher.start(16000)
        ids.append(started["stream_id"])
        await publisher.stop()
    assert len(set(ids)) == len(ids)
    for stream_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", stream_id)  # >= 96 random bits, URL-safe
    assert len({stream_id[:4] for stream_id in ids}) > 1  # not a counter with a fixed prefix


async def test_a_non_loopback_address_without_tokens_logs_a_warning(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.security"):
        await start_server(host="0.0.0.0")  # the test server itself binds 127.0.0.1
    assert any("WITHOUT ACCESS TOKENS" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.security"):
        await start_server(host="0.0.0.0", tokens=TOKENS)
        await start_server(host="127.0.0.1")
        await start_server(host="::1")
    assert not any("WITHOUT ACCESS TOKENS" in record.getMessage() for record in caplog.records)


def test_token_specifications_parse_or_name_the_bad_entry() -> None:
    table = TokenTable.parse(TOKENS)
    found = table.find(ALL)
    assert found is not None and found.name == "all" and found.rights == frozenset(Right)
    assert table.find("publisher-secret") is None
    assert not TokenTable.parse("").enabled
    for bad, fragment in (("a:short:publish", "8-256"), ("a:long-enough-1:fly", "unknown right"),
                          ("a:long-enough-1", "NAME:TOKEN:RIGHTS"),
                          ("a:long-enough-1:publish;a:long-enough-2:publish", "twice"),
                          ("a:long-enough-1:publish;b:long-enough-1:publish", "another entry"),
                          (" ; ", "names no token")):
        with pytest.raises(ValueError, match=fragment) as info:
            TokenTable.parse(bad)
        assert "long-enough" not in str(info.value)  # a secret never appears in the message


def test_origin_rules() -> None:
    assert normalise("HTTPS://Example.org:443/") == "https://example.org"
    assert origin_allowed(None, "h:1", "http", frozenset())
    assert origin_allowed("http://10.0.0.1:1", "10.0.0.1:1", "http", frozenset())
    assert origin_allowed("http://localhost", "localhost:80", "http", frozenset())
    assert not origin_allowed("http://h:1", "h:1", "http", frozenset())  # a DNS name can be rebound
    assert not origin_allowed("https://127.0.0.1:1", "127.0.0.1:1", "http", frozenset())  # the scheme counts
    assert not origin_allowed("https://h:1", "other:1", "https", frozenset())
    assert not origin_allowed("file://", "h:1", "http", frozenset())
    assert origin_allowed("http://anything", "h", "http", frozenset({"*"}))
