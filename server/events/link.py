"""Ableton Link output: the server joins a Link session and publishes one live stream's tempo and beat phase.

With ``--link`` the server is a Link peer (PyPI ``aalink``; Link discovers peers by UDP multicast on the
local network) from start-up to shutdown. A stream claims the session with its option ``"link": true``;
one stream holds it at a time, and the latest claim wins: the previous holder is told (a ``link_taken``
warning, and its option turns false). At each of the holder's ``beat`` events the session's tempo is set
to the median ``bpm`` of its latest three beats and, when the session's beat has drifted from the
music's, its phase is forced so that a whole beat (with a known ``bar_position``, the bar's beat
``bar_position - 1`` of a 4-beat quantum) falls at the beat's ``wall_time``. When the holder stops or
lets go, the session keeps its last tempo and phase. Everything runs on the event loop, fed by the fan-out
of the holder's session.
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.exceptions import ConfigError, SettingsError
from server.protocol.stream_messages import Event

log = logging.getLogger(__name__)

QUANTUM_BEATS = 4.0  # Link's quantum: beats per bar, for the phase peers align bars on
START_BPM = 120.0  # the session tempo the server proposes when it joins, before any stream claims it
PHASE_TOLERANCE_BEATS = 0.02  # the session's beat is forced only when further than this from the music's
TEMPO_BEATS = 3  # the session's tempo is the median bpm of the holder's latest beats (one outlier is ignored)


def beat_to_force(link_beat: float, elapsed_s: float, bpm: float, bar_position: int | None,
                  quantum_beats: float = QUANTUM_BEATS,
                  tolerance_beats: float = PHASE_TOLERANCE_BEATS) -> float | None:
    """The Link beat to force now so that the music's last beat falls on a whole Link beat, or None.

    Parameters
    ----------
    link_beat : float
        The session's beat now, beats.
    elapsed_s : float
        Seconds since the music's beat (its ``wall_time``); may be slightly negative.
    bpm : float
        The music's tempo, beats per minute.
    bar_position : int or None
        The beat's position in its bar (1 = downbeat): the music's beat is then put on a Link beat that is
        ``bar_position - 1`` modulo ``quantum_beats``; None: on the nearest whole beat.
    quantum_beats, tolerance_beats : float
        Link's quantum, beats; the largest phase error left alone, beats.

    Returns
    -------
    float or None
        The beat value for now nearest ``link_beat`` with the music's phase, or None when ``link_beat`` is
        already within ``tolerance_beats`` of it.
    """
    since = elapsed_s * bpm / 60.0  # beats since the music's beat
    if bar_position is None:
        step, offset = 1.0, 0.0
    else:
        step, offset = quantum_beats, float((bar_position - 1) % round(quantum_beats))
    # Whole k with k = offset (mod step), nearest to link_beat - since.
    k = offset + step * round((link_beat - since - offset) / step)
    target = k + since
    if abs(target - link_beat) <= tolerance_beats:
        return None
    return target


def check_link(output: LinkOutput | None, wanted: bool) -> None:
    """Raise :class:`SettingsError` (option ``link``) when a stream asks for Link and the server has none."""
    if wanted and (output is None or not output.enabled):
        raise SettingsError("link", wanted,
                            "the server is not in an Ableton Link session (start it with --link)")


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the server's Link peer sees (``GET /api/v3/link``)."""

    peers: int  # other peers in the session
    tempo_bpm: float  # the session's tempo
    stream_id: str | None  # the stream that publishes to it


class LinkOutput:
    """The server's Link peer and which stream publishes to it.

    Parameters
    ----------
    enabled : bool
        Join the session at :meth:`start` (``--link``). Disabled, streams may not ask for it
        (:func:`check_link`).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._link: Any = None  # aalink.Link once started (its own threads; made on the running loop)
        self._holder: str | None = None
        self._displaced: Callable[[str], None] | None = None  # the holder's callback when another claims
        self._recent_bpm: collections.deque[float] = collections.deque(maxlen=TEMPO_BEATS)

    async def start(self) -> None:
        """Join the session (needs the running event loop: aalink calls back on it)."""
        if not self.enabled:
            return
        try:
            import aalink  # only a server run with --link loads it
        except ImportError as exc:
            raise ConfigError(f"--link needs the Python package aalink ({exc})") from None

        link = aalink.Link(START_BPM)
        link.quantum = QUANTUM_BEATS
        link.enabled = True
        self._link = link
        log.info("joined the Ableton Link session")

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.enabled = False


    @property
    def holder(self) -> str | None:
        """The stream whose beats the session follows."""
        return self._holder

    def claim(self, stream_id: str, displaced: Callable[[str], None]) -> None:
        """``stream_id`` publishes to the session from now on; the previous holder's ``displaced`` is called
        with the new holder's id."""
        if self._holder == stream_id:
            self._displaced = displaced
            return
        previous, notify = self._holder, self._displaced
        self._holder, self._displaced = stream_id, displaced
        self._recent_bpm.clear()
        if previous is not None and notify is not None:
            notify(stream_id)

    def release(self, stream_id: str) -> None:
        """``stream_id`` stops publishing (option off, or its end); nothing if it did not hold the session."""
        if self._holder == stream_id:
            self._holder, self._displaced = None, None
            self._recent_bpm.clear()

    def state(self) -> LinkState | None:
        link = self._link
        if link is None:
            return None
        return LinkState(int(link.num_peers), float(link.tempo), self._holder)

    def forwarder(self, stream_id: str) -> Callable[[Event], None]:
        """A consumer of one stream's events (its fan-out): its beats move the session while it holds it."""

        def forward(event: Event) -> None:
            if event["type"] == "beat" and self._holder == stream_id:
                self.publish_beat(event["bpm"], event["wall_time"], event.get("bar_position"))

        return forward

    def publish_beat(self, bpm: float, wall_time_s: float, bar_position: int | None) -> None:
        """Set the session's tempo to the median of the latest beats' ``bpm`` and align its phase with a
        beat at ``wall_time_s``."""
        link = self._link
        if link is None or not math.isfinite(bpm) or bpm <= 0.0:
            return
        self._recent_bpm.append(bpm)
        bpm = statistics.median(self._recent_bpm)
        if abs(float(link.tempo) - bpm) > 1e-3:
            link.tempo = bpm  # keeps the session's beat continuous at now
        target = beat_to_force(float(link.beat), time.time() - wall_time_s, bpm, bar_position)
        if target is not None:
            link.force_beat(target)
