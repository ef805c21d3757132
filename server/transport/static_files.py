"""The browser client: ``static/`` served at ``/`` (pages, scripts, styles, the favicon).

``/`` is ``index.html`` (the live page); ``/monitor`` and ``/upload`` name ``monitor.html`` and
``upload.html``. Paths under ``/api/`` are never served from here, so the API's own routes and errors stay
as they are. Every response asks the browser to revalidate (``no-cache``) with the file's ETag, so a new
version of a page is picked up at once without a build step or cache-busting names.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from server.protocol.codec import clip

STATIC_DIR = web.AppKey("static_dir", Path)
DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
INDEX = "index.html"
NAME_MAX_BYTES = 255  # the longest file name a file system takes (NAME_MAX)
QUOTED_PATH_CHARS = 200  # at most this much of a requested path is repeated in a 404
FAVICON = "favicon.svg"
HEADERS = MappingProxyType({"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
# Set here rather than guessed from the host's MIME database: a module script served as anything but
# JavaScript is refused by the browser.
CONTENT_TYPES = MappingProxyType({
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
})


def _not_found(path: str) -> web.Response:
    shown = clip(path, QUOTED_PATH_CHARS)
    return web.json_response({"error": {"code": "not_found", "message": f"no file at /{shown}"}}, status=404,
                             headers=HEADERS)


def _usable(part: str) -> bool:
    """Whether ``part`` can name a file here: not hidden, no separator or control character, not too long."""
    return (not part.startswith(".") and "\\" not in part and part.isprintable()
            and len(part.encode("utf-8", "surrogatepass")) <= NAME_MAX_BYTES)


def resolve(root: Path, path: str) -> Path | None:
    """The file under ``root`` that URL path ``path`` (without its leading slash) names, or ``None``.

    An empty path names the index; a path without a suffix names its ``.html`` page. Nothing outside
    ``root`` and no hidden file (a part starting with ``.``) is ever returned; a part that no file can have
    (a control character, NUL included, or more than 255 bytes) names nothing.
    """
    parts = [part for part in path.split("/") if part]
    if not all(_usable(part) for part in parts):
        return None  # NUL, newlines and names over 255 bytes included: 404, never an OSError
    if not parts:
        parts = [INDEX]
    elif "." not in parts[-1]:
        parts[-1] += ".html"
    try:
        candidate = root.joinpath(*parts).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):  # what the file system refuses is not there
        return None
    return candidate


async def static_file(request: web.Request) -> web.StreamResponse:
    path = request.match_info.get("path", "")
    found = resolve(request.app[STATIC_DIR], path)
    if found is None:
        return _not_found(path)
    content_type = CONTENT_TYPES.get(found.suffix.lower(), "application/octet-stream")
    return web.FileResponse(found, headers={**HEADERS, "Content-Type": content_type})


async def favicon(request: web.Request) -> web.StreamResponse:
    """``/favicon.ico``, which browsers ask for on their own: the SVG icon (a 404 is a console error)."""
    found = resolve(request.app[STATIC_DIR], FAVICON)
    if found is None:
        return _not_found("favicon.ico")
    return web.FileResponse(found, headers={**HEADERS, "Content-Type": CONTENT_TYPES[".svg"]})


def setup(app: web.Application, root: Path = DEFAULT_STATIC_DIR) -> None:
    """Serve ``root`` at ``/``; more specific routes (the API) always win over these."""
    app[STATIC_DIR] = root.resolve()
    app.router.add_get("/", static_file)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get(r"/{path:(?!api/)[^?#]+}", static_file)
