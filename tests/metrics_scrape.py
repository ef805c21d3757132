"""Reading ``GET /metrics`` in tests: the Prometheus text format parsed into ``{series: value}``."""

from __future__ import annotations

import re

import aiohttp

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$')


def parse(text: str) -> dict[str, float]:
    """Every sample line as ``'name{labels}' -> value``; comment lines must be HELP or TYPE."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = LINE_RE.match(line)
        assert match, f"not a sample line: {line!r}"
        values[match.group(1)] = float(match.group(2))
    return values


async def scrape(http: aiohttp.ClientSession, base_url: str, headers: dict[str, str] | None = None
                 ) -> dict[str, float]:
    async with http.get(base_url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await resp.text())
