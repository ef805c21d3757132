"""No access token in the logs: a real server process with tokens and its access log, requests carrying
``?token=`` (HTTP, WebSocket, a page's ``Referer``), and its whole output searched for the secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable

import aiohttp
import pytest
from yarl import URL

from server.observability.logs import ContextFormatter
from server.observability.redact import redact_tokens
from tests.conftest import ServerProcess

SECRET = "Sup3r-secret-token_A1"
WRONG = "Wr0ng-guess-token_B2"
TOKENS = f"ops:{SECRET}:publish,subscribe,analyse"


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /api/v3/streams?token=abc123 HTTP/1.1", "GET /api/v3/streams?token=REDACTED HTTP/1.1"),
    ("/api/v3/stream?codec=json&token=abc&x=1", "/api/v3/stream?codec=json&token=REDACTED&x=1"),
    ('"http://host:8080/?token=a%2Fb+c" "Mozilla"', '"http://host:8080/?token=REDACTED" "Mozilla"'),
    ("/x?%74oken=abc", "/x?%74oken=REDACTED"),  # the name percent-encoded: the server reads it as `token`
    ("/x?Token=abc&token=def", "/x?Token=REDACTED&token=REDACTED"),
    ("/x?mytoken=abc&tokens=2", "/x?mytoken=abc&tokens=2"),  # other parameters stay
    ("stream ended token=ops client=127.0.0.1", "stream ended token=ops client=127.0.0.1"),  # not a query
])
def test_the_token_parameter_is_redacted_and_nothing_else(text: str, expected: str) -> None:
    assert redact_tokens(text) == expected


def test_the_log_formatter_redacts_any_line_and_its_traceback() -> None:
    try:
        raise ValueError(f"cannot fetch http://a/?token={SECRET}")
    except ValueError:
        record = logging.LogRecord("server", logging.ERROR, __file__, 1, "GET %s failed",
                                   (f"/?token={SECRET}",), sys.exc_info())
    line = ContextFormatter("%(message)s").format(record)
    assert SECRET not in line
    assert line.startswith("GET /?token=REDACTED failed\nTraceback")
    assert line.endswith("ValueError: cannot fetch http://a/?token=REDACTED")


async def test_a_server_never_logs_a_token(server_process: Callable[..., ServerProcess]) -> None:
    proc = server_process("--tokens", TOKENS, "--log-level", "INFO", "--workers", "1")
    base = URL(proc.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(base.with_path("/api/v3/streams").with_query(token=SECRET)) as resp:
            assert resp.status == 200
        async with http.get(base.with_path("/api/v3/streams").with_query(token=WRONG)) as resp:
            assert resp.status == 401
        async with http.get(base.with_path("/metrics").with_query(codec="json", token=SECRET)) as resp:
            assert resp.status == 200
        encoded = URL(f"{proc.url}/api/v3/streams?%74oken={SECRET}", encoded=True)
        async with http.get(encoded) as resp:
            assert resp.status == 200  # the server reads the name as `token`: so must the redaction
        page_url = str(base.with_path("/upload").with_query(token=SECRET))
        async with http.get(base.with_path("/css/app.css"), headers={"Referer": page_url}) as resp:
            assert resp.status == 200
        ws = await http.ws_connect(base.with_path("/api/v3/stream").with_query(token=SECRET))
        await ws.send_str(json.dumps({"type": "start", "sample_rate": 16000, "channels": 1,
                                      "encoding": "pcm_f32le"}))
        assert json.loads((await ws.receive(timeout=30)).data)["type"] == "started"
        await ws.send_str(json.dumps({"type": "stop"}))
        while (await ws.receive(timeout=30)).type == aiohttp.WSMsgType.TEXT:
            pass
        await ws.close()
    await asyncio.to_thread(proc.stop)  # the output is complete once the process has exited
    output = "".join(proc.output)
    assert SECRET not in output and WRONG not in output, output
    access = [line for line in proc.output if "aiohttp.access" in line]
    # Each request above has an access line, its token redacted (the WebSocket's once it closed).
    assert sum("GET /api/v3/streams?token=REDACTED " in line for line in access) == 2, access
    assert any("GET /metrics?codec=json&token=REDACTED " in line for line in access), access
    assert any("GET /api/v3/streams?%74oken=REDACTED " in line for line in access), access
    assert any("/css/app.css" in line and "/upload?token=REDACTED" in line for line in access), access
    assert any("GET /api/v3/stream?token=REDACTED " in line for line in access), access
