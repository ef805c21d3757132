"""The WebSocket ``Origin`` check (cross-site WebSocket hijacking).

A browser always sends ``Origin`` with a WebSocket handshake; other clients usually send none and are
allowed (they are not a victim's browser). A browser's origin must be one of ``allowed_origins``, or, when
that is empty, name the same host and port as the request's ``Host``.
"""

from __future__ import annotations

from types import MappingProxyType
from urllib.parse import urlsplit

DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443, "ws": 80, "wss": 443})


def parse_allowed(spec: str) -> frozenset[str]:
    """``allowed_origins`` as normalised origins; ``*`` allows any."""
    return frozenset(normalise(item) for item in spec.split(",") if item.strip())


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
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a WebSocket handshake with header ``Origin: origin`` to ``Host: host`` is accepted."""
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
        scheme = parts.scheme.lower()
    except ValueError:
        return False
    if scheme not in ("http", "https"):
        return False  # includes "null" (sandboxed frames, file: pages)
    from_origin = _host_port(parts.netloc, scheme)
    requested = _host_port(host, scheme)
    return from_origin is not None and from_origin == requested
