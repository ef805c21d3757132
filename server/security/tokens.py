"""Access tokens from the server's configuration: ``NAME:TOKEN:RIGHTS;...``.

Each entry names a token (the name appears in logs, never the secret), the secret itself, and its rights,
a comma-separated subset of ``publish``, ``subscribe`` and ``analyse``. An empty specification configures
no tokens: the server is then open to everyone who can reach it. A specification that is not empty but
names no token (``";;"``, ``" "``: a variable that was meant to hold tokens) is refused, like any malformed
one, so a typo never opens the server.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass

from server.exceptions import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_.~+/=-]{8,256}$")  # what fits a header and a query unescaped


class Right(enum.Enum):
    PUBLISH = "publish"  # live streams in: WebSocket and WebRTC
    SUBSCRIBE = "subscribe"  # list live streams, watch their events
    ANALYSE = "analyse"  # file analysis: upload, look up tasks


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    rights: frozenset[Right]
    digest: bytes  # SHA-256 of the secret; the secret itself is not kept


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _parse_entry(entry: str) -> tuple[str, str, frozenset[Right]]:
    parts = entry.split(":")
    if len(parts) != 3:
        raise ConfigError(f"tokens: entry {entry.split(':')[0]!r}... must be NAME:TOKEN:RIGHTS")
    name, secret, rights_text = (part.strip() for part in parts)
    if not NAME_RE.match(name):
        raise ConfigError(f"tokens: name {name!r} must be 1-64 characters from A-Z a-z 0-9 _ . -")
    if not SECRET_RE.match(secret):
        raise ConfigError(f"tokens: the token of {name!r} must be 8-256 characters from "
                         "A-Z a-z 0-9 _ . ~ + / = -")
    rights: set[Right] = set()
    for word in (word.strip() for word in rights_text.split(",")):
        try:
            rights.add(Right(word))
        except ValueError:
            names = ", ".join(right.value for right in Right)
            raise ConfigError(f"tokens: {name!r} has unknown right {word!r}; use {names}") from None
    return name, secret, frozenset(rights)


class TokenTable:
    """The configured tokens; :meth:`find` looks a presented secret up in constant time per token."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens

    @classmethod
    def parse(cls, spec: str) -> TokenTable:
        """Parse ``NAME:TOKEN:RIGHTS;...``; raises :class:`ConfigError` naming the entry, never its secret."""
        tokens: list[Token] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for entry in (entry.strip() for entry in spec.split(";")):
            if not entry:
                continue
            name, secret, rights = _parse_entry(entry)
            digest = _digest(secret)
            if name in names:
                raise ConfigError(f"tokens: name {name!r} appears twice")
            if digest in digests:
                raise ConfigError(f"tokens: the token of {name!r} is also another entry's token")
            names.add(name)
            digests.add(digest)
            tokens.append(Token(name, rights, digest))
        if spec and not tokens:
            raise ConfigError(f"tokens: {spec!r} names no token (NAME:TOKEN:RIGHTS;...); refusing to start "
                              "open to everyone. Leave the option unset (or empty) to run without tokens")
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self._tokens)

    def find(self, secret: str) -> Token | None:
        """The token whose secret is ``secret``, comparing digests in constant time, or ``None``."""
        digest = _digest(secret)
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(token.digest, digest):
                found = token
        return found
