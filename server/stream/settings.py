"""A live stream's settings: detector settings plus stream options, split from one client mapping.

The ``settings`` object of ``start`` and ``configure`` carries both. Keys named by a field of
:class:`StreamOptions` are stream options (what the server does with the stream's results); every other
key goes to :meth:`DetectorSettings.from_mapping`, which rejects unknown keys. To add a stream option,
add a field to :class:`StreamOptions` and its validation to :meth:`StreamOptions.from_mapping`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.dsp import DetectorSettings
from server.dsp.plan import plan_for
from server.dsp.settings import GRID_SETTINGS
from server.exceptions import SettingsError

MAX_NAME_CHARS = 64  # the stream option ``name``


@dataclass(frozen=True)
class StreamOptions:
    """Options of a stream that are not detector settings.

    Attributes
    ----------
    odf : bool
        Also send the onset-strength (detection function) values, one per hop, in ``odf`` messages.
    osc : tuple of str
        Names of the server's configured OSC targets that receive this stream's onsets (see
        :mod:`server.events.osc`; whether each name exists is checked by the stream service).
    ack : bool
        Send the publisher an ``ack`` after each piece of audio is analysed, so a publisher that is not real
        time (a script pushing a recording) can wait instead of overrunning the buffer (flow control).
    name : str
        A name the publisher gives the stream (1–64 printable characters; ``""``: none), shown in the
        stream list, so subscribers find a stream again after its publisher reconnects (``listen --follow``).
    link : bool
        Publish this stream's tempo and beat phase to the server's Ableton Link session (see
        :mod:`server.events.link`; whether the server has one is checked by the stream service). One stream
        holds the session at a time: the latest to ask.
    """

    odf: bool = False
    osc: tuple[str, ...] = ()
    ack: bool = False
    name: str = ""
    link: bool = False

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: StreamOptions | None = None) -> StreamOptions:
        """Validate ``values`` (only keys in :meth:`names`); unspecified options come from ``base``."""
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("odf", "ack", "link"):
                if not isinstance(value, bool):
                    raise SettingsError(key, value, "must be true or false")
                changes[key] = value
            elif key == "osc":
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise SettingsError(key, value, "must be a list of OSC target names")
                changes[key] = tuple(dict.fromkeys(value))
            elif key == "name":
                if not isinstance(value, str) or len(value) > MAX_NAME_CHARS or not value.isprintable():
                    raise SettingsError(key, value, f"must be a string of at most {MAX_NAME_CHARS} printable "
                                        "characters")
                changes[key] = value
            else:
                raise SettingsError(str(key), value, "unknown stream option")
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "osc": list(self.osc)}


@dataclass(frozen=True)
class StreamSettings:
    """Every effective setting of one stream."""

    detector: DetectorSettings = dataclasses.field(default_factory=DetectorSettings)
    options: StreamOptions = dataclasses.field(default_factory=StreamOptions)

    @classmethod
    def from_mapping(cls, values: object, base: StreamSettings | None = None) -> StreamSettings:
        """Split and validate a client's ``settings`` mapping; unspecified keys keep ``base``'s values.

        With a ``base`` (a running stream), the settings that fix the analysis grid cannot change.
        Raises :class:`SettingsError` naming the offending key and value.
        """
        if not isinstance(values, Mapping):
            raise SettingsError("settings", values, "must be an object of setting names to values")
        option_names = StreamOptions.names()
        option_values = {k: v for k, v in values.items() if k in option_names}
        detector_values = {k: v for k, v in values.items() if k not in option_names}
        current = base or cls()
        detector = DetectorSettings.from_mapping(detector_values, base=current.detector)
        if base is not None:
            for name in GRID_SETTINGS:
                if name in detector_values and getattr(detector, name) != getattr(base.detector, name):
                    raise SettingsError(name, detector_values[name], "cannot change while the stream runs")
        return cls(detector, StreamOptions.from_mapping(option_values, base=current.options))

    def to_dict(self) -> dict[str, Any]:
        return {**self.detector.to_dict(), **self.options.to_dict()}


def detector_timing(sample_rate: int, settings: DetectorSettings) -> tuple[float, float]:
    """``(latency_s, hop_s)`` of a detector at ``sample_rate`` with ``settings``, from their shared cached
    plan, without building a detector: the algorithmic latency (:attr:`~server.dsp.plan.Plan.latency_hops`:
    the look-ahead plus one hop, as :class:`~server.dsp.OnsetDetector` reports it; a rhythm beside the
    detector adds nothing: an onset's band is decided with the onset, :mod:`server.rhythm.bands`) and the
    distance between analysis frames."""
    plan = plan_for(sample_rate, settings)
    hop = plan.frames.grid.hop
    return plan.latency_hops * hop / sample_rate, hop / sample_rate


def warm_up_timing(sample_rates_hz: Sequence[int]) -> None:
    """Build the default settings' shared plans at ``sample_rates_hz`` in this process, as the first stream
    at each rate would in its ``start`` (:func:`detector_timing`).

    Run by the event loop's process when the server starts (the pool's workers have their own warm-up):
    building a plan runs numpy, scipy.sparse and pocketfft code that the server process otherwise touches
    first in a first stream's ``start``, faulting in about 1.5 MiB of library code then (and making that
    ``start`` wait for it)."""
    for rate_hz in sample_rates_hz:
        detector_timing(rate_hz, DetectorSettings())
