"""static/ served at /: the pages, their scripts with a JavaScript type, the favicon, nothing outside static/,
and the API's routes and errors untouched by the catch-all."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from server.transport.static_files import DEFAULT_STATIC_DIR, resolve

PAGES_AND_ASSETS = [
    ("/", "index.html"),
    ("/monitor", "monitor.html"),
    ("/upload", "upload.html"),
    ("/upload.html", "upload.html"),
    ("/js/live.js", "js/live.js"),
    ("/js/pcm-worklet.js", "js/pcm-worklet.js"),
    ("/css/app.css", "css/app.css"),
]
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}


async def test_pages_and_assets_are_served(server: TestServer, http: aiohttp.ClientSession) -> None:
    for path, file in PAGES_AND_ASSETS:
        async with http.get(server.make_url(path)) as response:
            assert response.status == 200, path
            assert await response.read() == (DEFAULT_STATIC_DIR / file).read_bytes()
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.content_type == TYPES[file.rsplit(".", 1)[1]], path
            assert response.charset == "utf-8"
            etag = response.headers["ETag"]
        # Revalidation (no-cache) costs a 304, not the file.
        async with http.get(server.make_url(path), headers={"If-None-Match": etag}) as response:
            assert response.status == 304, path


async def test_favicon_is_the_svg_icon(server: TestServer, http: aiohttp.ClientSession) -> None:
    for path in ("/favicon.ico", "/favicon.svg"):
        async with http.get(server.make_url(path)) as response:
            assert response.status == 200
            assert response.content_type == "image/svg+xml"
            assert (await response.read()).startswith(b"<svg")


MISSING_OR_OUTSIDE = ["/nope.html", "/js/missing.js", "/%2e%2e/pyproject.toml",
                      "/js/%2e%2e/%2e%2e/pyproject.toml", "/.hidden", "/js/..%2fapi.js"]


async def test_missing_files_and_escapes_are_404(server: TestServer, http: aiohttp.ClientSession) -> None:
    for path in MISSING_OR_OUTSIDE:
        async with http.get(server.make_url(path)) as response:
            assert response.status == 404, path
            body = await response.json()
            assert body["error"]["code"] == "not_found"


def test_resolve_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("i")
    (root / "js" / "a.js").write_text("a")
    (tmp_path / "secret.txt").write_text("s")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert resolve(root, "") == root / "index.html"
    assert resolve(root, "js/a.js") == root / "js" / "a.js"
    assert resolve(root, "index") == root / "index.html"
    for escape in ("../secret.txt", "js/../../secret.txt", "link.txt", "js", "..\\secret.txt", ".git/config"):
        assert resolve(root, escape) is None, escape


async def test_api_routes_are_not_shadowed(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.make_url("/api/v3/streams")) as response:
        assert response.status == 200
        assert (await response.json()) == {"streams": []}
    async with http.get(server.make_url("/api/v3/no-such-endpoint")) as response:
        assert response.status == 404
        assert "no file at" not in await response.text()
    async with http.get(server.make_url("/healthz")) as response:
        assert response.status == 200


SERVER_ROUTES = {"/healthz"}


def test_pages_reference_only_files_that_exist() -> None:
    """Every local script, style and icon a page or module names is in static/ (no build step)."""
    sources = list(DEFAULT_STATIC_DIR.glob("*.html")) + list(DEFAULT_STATIC_DIR.glob("js/*.js"))
    assert len(sources) >= 10
    for source in sources:
        text = source.read_text()
        for ref in re.findall(r'(?:src|href)="(/[^"#?]*)"', text):
            if ref in SERVER_ROUTES:
                continue
            assert resolve(DEFAULT_STATIC_DIR, ref.lstrip("/")) is not None, f"{source.name}: {ref}"
        for ref in re.findall(r'from "(\./[^"]+)"', text):
            assert (source.parent / ref).resolve().is_file(), f"{source.name}: {ref}"
