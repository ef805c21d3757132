"""The loud warning for a server reachable from other machines with no tokens configured."""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("server.security")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` only accepts connections from this machine.

    An empty host or a wildcard (``0.0.0.0``, ``::``) listens everywhere; an unknown name is assumed exposed.
    """
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, tokens_enabled: bool) -> bool:
    """Log a warning (and return ``True``) when serving on a non-loopback ``host`` without tokens."""
    if tokens_enabled or is_loopback(host):
        return False
    log.warning("!!! SERVING ON %r WITHOUT ACCESS TOKENS: anyone who can reach this address can publish "
                "streams, watch them and upload files. Configure --tokens NAME:TOKEN:RIGHTS;... "
                "(TRANSIENT_TOKENS) or listen on 127.0.0.1. !!!", host or "every address")
    return True
