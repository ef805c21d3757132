"""STUN/TURN configuration: the ``ice_servers`` option parsed into aiortc's :class:`RTCConfiguration`.

``ice_servers`` is a comma-separated list of URLs (RFC 7064 / RFC 7065)::

    stun:HOST[:PORT]
    turn:HOST[:PORT][?transport=udp|tcp]
    turns:HOST[:PORT][?transport=tcp]

``ice_username`` and ``ice_credential`` authenticate to the TURN servers. With an empty list the server
gathers host candidates only: no request ever leaves the machine, and a client on the same host or LAN
connects directly. aiortc uses the first STUN and the first TURN URL of the list; later ones are ignored
(:func:`parse_ice_servers` says so through :attr:`IceSettings.ignored`). Hosts are names or IPv4
addresses: aiortc does not parse IPv6 literals in these URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer

from server.exceptions import ConfigError

_URL = re.compile(
    r"(?P<scheme>stun|stuns|turn|turns):(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?")


class IceConfigError(ConfigError):
    """An ``ice_servers`` entry that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class IceSettings:
    """Parsed STUN/TURN servers: ``servers`` go to every peer connection; ``ignored`` are not used."""

    servers: tuple[RTCIceServer, ...]
    ignored: tuple[str, ...] = ()

    def rtc_configuration(self) -> RTCConfiguration:
        """A fresh configuration for one peer connection.

        An explicit (possibly empty) server list: aiortc falls back to a public Google STUN server when
        given none, and this server must not reach out anywhere unless configured to.
        """
        return RTCConfiguration(iceServers=list(self.servers))


def _check_url(url: str) -> str:
    """``url``'s scheme, after checking its form; raises :class:`IceConfigError`."""
    match = _URL.fullmatch(url)
    if match is None:
        raise IceConfigError(f"ice_servers: {url!r} is not a stun:, stuns:, turn: or turns: URL "
                             "(HOST[:PORT][?transport=udp|tcp])")
    scheme, port, transport = match["scheme"], match["port"], match["transport"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise IceConfigError(f"ice_servers: {url!r} has port {port}, outside 1..65535")
    if scheme.startswith("stun") and transport is not None:
        raise IceConfigError(f"ice_servers: {url!r}: a STUN URL takes no transport")
    if scheme == "turns" and transport == "udp":
        raise IceConfigError(f"ice_servers: {url!r}: turns: runs over TCP only")
    return str(scheme)


def parse_ice_servers(urls: str, username: str = "", credential: str = "") -> IceSettings:
    """Parse the ``ice_servers`` option; raises :class:`IceConfigError` for a malformed URL or a TURN URL
    without credentials."""
    entries = [part.strip() for part in urls.split(",") if part.strip()]
    servers: list[RTCIceServer] = []
    ignored: list[str] = []
    seen_stun = seen_turn = False
    for url in entries:
        scheme = _check_url(url)
        if scheme.startswith("turn"):
            if not username or not credential:
                raise IceConfigError(f"ice_servers: {url!r} is a TURN server: set ice_username and "
                                     "ice_credential")
            if seen_turn:
                ignored.append(url)
                continue
            seen_turn = True
            servers.append(RTCIceServer(urls=url, username=username, credential=credential))
        else:
            if scheme == "stuns" or seen_stun:  # aiortc has no STUN over TLS
                ignored.append(url)
                continue
            seen_stun = True
            servers.append(RTCIceServer(urls=url))
    return IceSettings(tuple(servers), tuple(ignored))
