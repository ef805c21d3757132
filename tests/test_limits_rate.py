"""The per-client request rate limit: HTTP API requests and WebSocket connections share one token bucket."""

from __future__ import annotations

import asyncio

import aiohttp

from server.security.rate import Bucket, RateLimiter, take
from tests.conftest import StartServer


async def test_api_requests_beyond_the_rate_get_429_with_retry_after(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(rate_limit_per_s=2.0, rate_limit_burst=3)
    streams = server.make_url("/api/v3/streams")
    for _ in range(3):
        async with http.get(streams) as resp:
            assert resp.status == 200
    async with http.get(streams) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
        assert body["error"]["code"] == "rate_limited"
    try:
        await http.ws_connect(str(server.make_url("/api/v3/stream")))
        raise AssertionError("the WebSocket handshake should have been refused")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 429
    for path in ("/healthz", "/readyz", "/"):  # not API requests: never limited
        async with http.get(server.make_url(path)) as resp:
            assert resp.status == 200, path
    await asyncio.sleep(0.7)  # 2 per second: one token again
    async with http.get(streams) as resp:
        assert resp.status == 200
    async with http.get(server.make_url("/metrics")) as resp:
        text = await resp.text()
    assert 'transient_requests_refused_total{reason="rate_limited"} 2' in text


async def test_a_zero_rate_disables_the_limit(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(rate_limit_per_s=0.0, rate_limit_burst=1)
    for _ in range(20):
        async with http.get(server.make_url("/api/v3/streams")) as resp:
            assert resp.status == 200


def test_token_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    bucket = Bucket(tokens=2.0, updated_s=0.0)
    assert take(bucket, 0.0, 4.0, 2.0) == 0.0
    assert take(bucket, 0.0, 4.0, 2.0) == 0.0
    assert take(bucket, 0.0, 4.0, 2.0) == 0.25  # one token every 1/4 s
    assert take(bucket, 0.25, 4.0, 2.0) == 0.0
    assert take(bucket, 100.0, 4.0, 2.0) == 0.0  # refilled to the burst only
    assert take(bucket, 100.0, 4.0, 2.0) == 0.0
    assert take(bucket, 100.0, 4.0, 2.0) > 0.0
    limiter = RateLimiter(1.0, 1)
    assert limiter.check("a", 0.0) == 0.0
    assert limiter.check("a", 0.0) > 0.0
    assert limiter.check("b", 0.0) == 0.0  # per client
