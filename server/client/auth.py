"""The client's access token: where it comes from and how every request carries it.

A token goes out as ``Authorization: Bearer TOKEN`` on every HTTP request and WebSocket handshake, never
in a URL (URLs end up in logs). ``TRANSIENT_TOKEN`` supplies it when the caller gives none, as
``TRANSIENT_SERVER`` supplies the server's address (docs/protocol.md, "Command line").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TOKEN_ENV = "TRANSIENT_TOKEN"
MAX_TOKEN_CHARS = 4096  # far above the server's 256; a longer value is a mistake (a file's contents?)


def normalise_token(token: str | None) -> str | None:
    """``token`` without surrounding whitespace, or ``None`` for no token (``None`` or empty).

    Raises :class:`ValueError` (without the token's value) when it cannot travel in a header: anything
    but printable ASCII without spaces, or too long.
    """
    if token is None or not token.strip():
        return None
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the token is {len(token)} characters long; at most {MAX_TOKEN_CHARS}")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("the token may hold only printable ASCII characters without spaces")
    return token


def default_token(environ: Mapping[str, str] | None = None) -> str | None:
    """``TRANSIENT_TOKEN`` if set and not empty, else ``None``."""
    return normalise_token((os.environ if environ is None else environ).get(TOKEN_ENV))


def auth_headers(token: str | None) -> dict[str, str]:
    """The headers that present ``token`` (none without one)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}
