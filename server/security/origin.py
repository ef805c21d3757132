"""The ``Origin`` check: cross-site WebSocket hijacking, cross-site form posts and DNS rebinding.

A browser sends ``Origin`` with every WebSocket handshake and every state-changing request (``POST`` and the
like); other clients usually send none and are allowed (they are not a victim's browser). A browser's origin
must be one of ``allowed_origins`` (scheme, host and port compared), or, when that is empty, the server's own
origin, and then only while the server is addressed by an IP address or ``localhost``.

Why not simply "same host as ``Host``": with DNS rebinding, the attacker's name (``evil.example``) is made to
resolve to this server, so the victim's browser sends ``Origin: http://evil.example:8080`` *and*
``Host: evil.example:8080`` — the two agree. An IP address or ``localhost`` cannot be rebound, so a page
served from one is the server's own; a server reached by a DNS name must list its origin(s).
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType
from urllib.parse import urlsplit

from server.exceptions import ConfigError

DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443, "ws": 80, "wss": 443})
BROWSER_SCHEMES = frozenset({"http", "https"})
LOOPBACK_NAMES = frozenset({"localhost"})  # resolved by the browser itself, never through DNS
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # requests that change nothing: no Origin check


def parse_allowed(spec: str) -> frozenset[str]:
    """``allowed_origins`` as normalised origins; ``*`` allows any. Raises :class:`ValueError` for an entry
    that is not ``*`` nor ``http(s)://host[:port]`` (:class:`ConfigError`)."""
    allowed = set()
    for item in (item.strip() for item in spec.split(",")):
        if not item:
            continue
        origin = normalise(item)
        if origin != "*" and not _is_origin(item.lower().rstrip("/")):
            raise ConfigError(f"allowed_origins: {item!r} is not an origin; write scheme://host[:port], e.g. "
                             "https://app.example.org, or *")
        allowed.add(origin)
    return frozenset(allowed)


def _is_origin(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in BROWSER_SCHEMES and bool(parts.hostname) and not parts.path and not parts.query


def normalise(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, without a default port or a trailing slash."""
    text = origin.strip().lower().rstrip("/")
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not parts.hostname:
        return text
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None:
        return None
    return parts.hostname.lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def cannot_be_rebound(hostname: str) -> bool:
    """Whether ``hostname`` names this machine without DNS: an IP address or ``localhost``."""
    if hostname in LOOPBACK_NAMES:
        return True
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, host: str | None, scheme: str, allowed: frozenset[str]) -> bool:
    """Whether a browser request with ``Origin: origin``, sent to ``Host: host`` over ``scheme`` (``http`` or
    ``https``, as the server received it), is accepted."""
    if origin is None:
        return True  # not a browser
    if "*" in allowed:
        return True
    if allowed:
        return normalise(origin) in allowed
    if host is None:
        return False
    try:
        parts = urlsplit(origin.strip())
        origin_scheme = parts.scheme.lower()
    except ValueError:
        return False
    if origin_scheme != scheme.lower() or origin_scheme not in BROWSER_SCHEMES:
        return False  # includes "null" (sandboxed frames, file: pages) and an https page on an http server
    if parts.path or parts.query or parts.fragment:
        return False  # an Origin is scheme://host[:port] and nothing else
    from_origin = _host_port(parts.netloc, origin_scheme)
    requested = _host_port(host, origin_scheme)
    return from_origin is not None and from_origin == requested and cannot_be_rebound(from_origin[0])


def needs_origin_check(method: str, websocket: bool) -> bool:
    """Whether a request is checked: every WebSocket handshake and every method that can change state."""
    return websocket or method.upper() not in SAFE_METHODS
