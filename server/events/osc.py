"""OSC output: onsets and beats of opted-in live streams, as OSC over UDP to targets in the server's
configuration.

Targets come only from the server's configuration (``--osc-targets``,
``NAME=HOST:PORT[/bundle[+DELAY_MS]][@PREFIX]``, comma-separated); a publisher opts its stream in by naming
targets in its settings (``{"osc": ["lights"]}``) and can never make the server send to an address of its
own choosing. Packets leave through one non-blocking
UDP socket per address family: a send that would block, or fails (unreachable network, no route), drops that
one packet and counts it, so a slow or missing target never delays the event loop or the stream.
The packet layout is documented in docs/protocol.md, section "OSC": one address per kind under the
target's prefix (``/onset``, ``/onset/low|mid|high``, ``/beat``, ``/bar``, ``/tempo``), only ``i``, ``f``
and ``s`` arguments (what common receivers accept), the value first and the stream id last.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from server.exceptions import ConfigError, SettingsError

if TYPE_CHECKING:  # only a type: importing it at run time would load the detector into every client
    from server.protocol.stream_messages import Event

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/transient"
BUNDLE_HEADER = b"#bundle\x00"
MAX_PREFIX_CHARS = 128
_PREFIX = re.compile(r"(/[A-Za-z0-9_.~!$%&'()+:;<=>@^`|-]+)+")  # OSC address parts, no pattern characters
RESOLVE_TIMEOUT_S = 5.0
RESOLVE_RETRY_S = 5.0  # an unresolved host name is looked up again at most this often
ERROR_LOG_INTERVAL_S = 10.0  # at most one warning per target per interval
MAX_DELAY_MS = 10_000.0
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BUNDLE_OPTION = re.compile(r"bundle(?:\+(\d+(?:\.\d+)?))?")


@dataclass(frozen=True, slots=True)
class OscTarget:
    """A named OSC receiver. With ``bundle`` each message is wrapped in a bundle whose time tag is the
    onset's wall-clock time plus ``delay_ms``."""

    name: str
    host: str
    port: int
    bundle: bool = False
    delay_ms: float = 0.0
    prefix: str = DEFAULT_PREFIX  # OSC address prefix of every message to this target


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; raises :class:`ValueError` naming the problem."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: an IPv6 address is written [ADDRESS]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
    if not host:
        raise ValueError(f"{text!r}: the host is empty")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_targets(spec: str) -> dict[str, OscTarget]:
    """Parse ``NAME=HOST:PORT[/bundle[+DELAY_MS]],...`` into targets by name (empty spec: none).

    Raises :class:`ConfigError` (a :class:`ValueError`) naming the option and the offending entry, so a
    malformed ``--osc-targets`` stops start-up with one line, like every other option.
    """
    targets: dict[str, OscTarget] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"osc_targets: OSC target {entry!r}: expected NAME=HOST:PORT")
        if not _NAME.fullmatch(name):
            raise ConfigError(f"osc_targets: OSC target {entry!r}: the name must be 1-64 of "
                              "A-Z a-z 0-9 _ . -")
        if name in targets:
            raise ConfigError(f"osc_targets: OSC target {name!r} is named twice")
        try:
            targets[name] = parse_target(name, rest)
        except ValueError as exc:
            raise ConfigError(f"osc_targets: OSC target {name!r}: {exc}") from None
    return targets


def parse_target(name: str, address: str) -> OscTarget:
    """The target ``name`` at ``HOST:PORT[/bundle[+DELAY_MS]][@PREFIX]``; raises :class:`ValueError`."""
    address, at, prefix = address.partition("@")
    prefix = prefix.strip() if at else DEFAULT_PREFIX
    if len(prefix) > MAX_PREFIX_CHARS or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"{prefix!r}: the address prefix must be /PART[/PART...] (at most "
                         f"{MAX_PREFIX_CHARS} characters, no spaces, no # * , ? [ ] {{ }} and no trailing /)")
    host_port, slash, option = address.partition("/")
    bundle, delay_ms = False, 0.0
    if slash:
        match = _BUNDLE_OPTION.fullmatch(option.strip())
        if match is None:
            raise ValueError(f"{address!r}: the only option is /bundle or /bundle+DELAY_MS")
        bundle, delay_ms = True, float(match.group(1) or 0.0)
        if delay_ms > MAX_DELAY_MS:
            raise ValueError(f"{address!r}: the delay is at most {MAX_DELAY_MS:g} ms")
    host, port = parse_host_port(host_port)
    return OscTarget(name, host, port, bundle, delay_ms, prefix)


Arg = int | float | str  # sent as OSC i (int32), f (float32) and s (string): no float64, no blobs
_ARG_TYPES: dict[type, str] = {int: OscMessageBuilder.ARG_TYPE_INT, float: OscMessageBuilder.ARG_TYPE_FLOAT,
                               str: OscMessageBuilder.ARG_TYPE_STRING}


def message(address: str, *args: Arg) -> bytes:
    """One OSC message; each argument typed by its Python type (int → i, float → f, str → s)."""
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg, _ARG_TYPES[type(arg)])
    return bytes(builder.build().dgram)


def onset_messages(prefix: str, stream_id: str, strength: float, band: str | None) -> list[bytes]:
    """``PREFIX/onset ,fs strength stream_id`` and, with a band, ``PREFIX/onset/BAND`` with the same."""
    out = [message(f"{prefix}/onset", float(strength), stream_id)]
    if band is not None:
        out.append(message(f"{prefix}/onset/{band}", float(strength), stream_id))
    return out


def beat_messages(prefix: str, stream_id: str, bpm: float, confidence: float,
                  bar_position: int | None = None) -> list[bytes]:
    """``PREFIX/beat ,is 1 stream_id`` (a trigger), then ``PREFIX/bar ,is bar_position stream_id`` once the
    meter is known (1 = downbeat), then ``PREFIX/tempo ,ffs bpm confidence stream_id``."""
    bar = [] if bar_position is None else [message(f"{prefix}/bar", int(bar_position), stream_id)]
    return [message(f"{prefix}/beat", 1, stream_id), *bar,
            message(f"{prefix}/tempo", float(bpm), float(confidence), stream_id)]


def bundle_of(messages: bytes | Sequence[bytes], time_tag_s: float) -> bytes:
    """``messages`` in one OSC bundle whose time tag is Unix time ``time_tag_s`` (NTP format on the wire)."""
    # A bundle is "#bundle\0", the 64-bit NTP time tag, then each element as a 32-bit size and its bytes.
    parts = [messages] if isinstance(messages, bytes) else list(messages)
    return BUNDLE_HEADER + osc_types.write_date(time_tag_s) + b"".join(
        len(part).to_bytes(4, "big") + part for part in parts)


def packets(target: OscTarget, messages: list[bytes], wall_time_s: float) -> list[bytes]:
    """The datagrams ``target`` receives for one event's messages: each alone, or one bundle."""
    if target.bundle:
        return [bundle_of(messages, wall_time_s + target.delay_ms / 1000.0)]
    return messages


Messages = Callable[[str], list[bytes]]  # a target's prefix -> the messages of one event


def onset_forwarder(sender: OscSender, stream_id: str,
                    names: Callable[[], Sequence[str]]) -> Callable[[Event], None]:
    """A consumer of one stream's events (its fan-out) that sends each onset and beat to the OSC targets
    the stream names at that moment (``names()``, its ``osc`` option)."""

    def forward(event: Event) -> None:
        kind = event["type"]
        if kind in ("onset", "beat"):
            targets = names()
            if not targets:
                return
            if kind == "onset":
                sender.send_onset(targets, stream_id, event["time"], event["strength"], event["wall_time"],
                                  event.get("band"))
            else:
                sender.send_beat(targets, stream_id, event["bpm"], event["confidence"], event["wall_time"],
                                 event.get("bar_position"))

    return forward


def check_targets(sender: OscSender | None, names: Iterable[str]) -> None:
    """Raise :class:`SettingsError` (setting ``osc``) unless every name is a target of ``sender``."""
    (sender or OscSender({})).check(names)


@dataclass(slots=True)
class _Route:
    """A target's resolved socket address and its counters."""

    target: OscTarget
    family: int = 0
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | None = None
    retry_at_s: float = 0.0
    sent: int = 0
    dropped: int = 0
    last_warning_s: float = field(default=-ERROR_LOG_INTERVAL_S)


def _numeric(host: str) -> int | None:
    """The address family of an IP literal, or ``None`` for a host name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


class OscSender:
    """Sends onsets to named targets; :meth:`send_onset` never blocks.

    Host names are resolved in the background from :meth:`start` on (after a failure, again at most every
    ``RESOLVE_RETRY_S``, when a packet is due); packets for a target not yet resolved are dropped and
    counted.
    """

    def __init__(self, targets: Mapping[str, OscTarget]) -> None:
        self.targets = dict(targets)
        self._routes = {name: _Route(target) for name, target in self.targets.items()}
        self._sockets: dict[int, socket.socket] = {}
        self._resolving: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_spec(cls, spec: str) -> OscSender:
        return cls(parse_targets(spec))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.targets)

    def counters(self) -> dict[str, dict[str, int]]:
        """Per target: datagrams ``sent`` and ``dropped``."""
        return {name: {"sent": r.sent, "dropped": r.dropped} for name, r in self._routes.items()}

    def check(self, names: Iterable[str]) -> None:
        """Raise :class:`SettingsError` (setting ``osc``) if a name is not a configured target."""
        unknown = sorted(set(names) - set(self.targets))
        if unknown:
            known = ", ".join(sorted(self.targets)) or "none are configured"
            raise SettingsError("osc", unknown[0] if len(unknown) == 1 else unknown,
                                f"unknown OSC target; this server's targets: {known}")

    async def start(self, resolve_names: bool = False) -> None:
        """Open the sockets for IP-literal targets now; host names resolve in the background (or now,
        with ``resolve_names``: a command-line tool would rather wait than drop its first packets)."""
        for route in self._routes.values():
            if resolve_names or _numeric(route.target.host) is not None:
                await self._resolve(route)
            else:
                self._retry_resolve(route, time.monotonic())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._resolving):
            task.cancel()
        for task in list(self._resolving):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    async def _resolve(self, route: _Route) -> None:
        host, port = route.target.host, route.target.port
        family = _numeric(host)
        try:
            if family is None:
                loop = asyncio.get_running_loop()
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT_S)
            else:
                infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
        except (OSError, TimeoutError) as exc:
            route.retry_at_s = time.monotonic() + RESOLVE_RETRY_S
            log.warning("OSC target %r: cannot resolve %s (%s); will retry", route.target.name, host, exc)
            return
        family, _, _, _, sockaddr = infos[0]
        if self._closed:
            return
        if family not in self._sockets:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as exc:
                route.retry_at_s = time.monotonic() + RESOLVE_RETRY_S
                log.warning("OSC target %r: cannot open a UDP socket (%s)", route.target.name, exc)
                return
            sock.setblocking(False)
            self._sockets[family] = sock
        route.family, route.sockaddr = family, sockaddr  # type: ignore[assignment]

    def _retry_resolve(self, route: _Route, now_s: float) -> None:
        if self._closed or now_s < route.retry_at_s:
            return
        route.retry_at_s = now_s + RESOLVE_RETRY_S
        task = asyncio.get_running_loop().create_task(self._resolve(route))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    def _drop(self, route: _Route, reason: str, now_s: float) -> None:
        route.dropped += 1
        if now_s - route.last_warning_s >= ERROR_LOG_INTERVAL_S:
            route.last_warning_s = now_s
            log.warning("OSC target %r: packet dropped (%s); %d dropped so far", route.target.name, reason,
                        route.dropped)

    def send_onset(self, names: Iterable[str], stream_id: str, time_s: float, strength: float,
                   wall_time_s: float, band: str | None = None) -> None:
        """Send one onset to each named target that exists. Never blocks; failures are counted."""
        self._send(names, lambda prefix: onset_messages(prefix, stream_id, strength, band), wall_time_s)

    def send_beat(self, names: Iterable[str], stream_id: str, bpm: float, confidence: float,
                  wall_time_s: float, bar_position: int | None = None) -> None:
        """Send one beat (``/beat``, ``/bar`` once known, ``/tempo``) to each named target that exists.
        Never blocks."""
        self._send(names, lambda prefix: beat_messages(prefix, stream_id, bpm, confidence, bar_position),
                   wall_time_s)

    def _send(self, names: Iterable[str], messages: Messages, wall_time_s: float) -> None:
        for name in names:
            route = self._routes.get(name)
            if route is None or self._closed:
                continue
            now_s = time.monotonic()
            sock = self._sockets.get(route.family)
            if route.sockaddr is None or sock is None:
                self._drop(route, "host not resolved", now_s)
                self._retry_resolve(route, now_s)
                continue
            for packet in packets(route.target, messages(route.target.prefix), wall_time_s):
                try:
                    sock.sendto(packet, route.sockaddr)
                except BlockingIOError:
                    self._drop(route, "socket send buffer full", now_s)
                except OSError as exc:
                    self._drop(route, str(exc), now_s)
                else:
                    route.sent += 1
