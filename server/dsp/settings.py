"""Detector settings: one frozen, validated dataclass that clients can send as a mapping.

Every field carries its unit in its name. :meth:`DetectorSettings.from_mapping` is the one place where
untrusted values (from JSON or msgpack) become settings; it names the offending key and value in a
:class:`~server.exceptions.SettingsError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from typing import Any, cast

from server.dsp.methods import METHOD_NAMES, METHOD_TABLE
from server.exceptions import SettingsError

METHODS: tuple[str, ...] = METHOD_NAMES  # the allowed values of ``method``: the rows of the method table

# name -> (low, high) inclusive ranges of numeric settings, in the field's own unit.
RANGES: Mapping[str, tuple[float, float]] = types.MappingProxyType(
    {
        "threshold": (0.0, 100.0),
        "min_interval_ms": (0.0, 1000.0),
        "silence_db": (-140.0, 0.0),
        "lookahead_ms": (0.0, 200.0),
        "frame_ms": (10.0, 100.0),
        "hop_ms": (2.0, 25.0),
    }
)

# Settings that fix the analysis grid; they cannot change in the middle of a stream.
GRID_SETTINGS = ("frame_ms", "hop_ms")


def check_ranges(settings: Any, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Check each numeric field of a frozen settings dataclass against its inclusive ``(low, high)`` range and
    store it as a float.

    Raises
    ------
    SettingsError
        Naming the first field that is not a number (booleans are not) or is outside its range.
    """
    for name, (low, high) in ranges.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(name, value, "must be a number")
        if not math.isfinite(value) or not low <= value <= high:
            raise SettingsError(name, value, f"must be between {low:g} and {high:g}")
        object.__setattr__(settings, name, float(value))


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """Sensitivity and analysis settings of one :class:`~server.dsp.OnsetDetector`.

    Attributes
    ----------
    method : str
        Onset detection function, one of :data:`METHODS` (the rows of
        :data:`~server.dsp.methods.METHOD_TABLE`). ``superflux`` (default) is log-filtered spectral flux
        with a maximum filter across frequency (Böck & Widmer, DAFx 2013); ``complex`` is rectified
        complex-domain deviation; ``hfc`` the rise of high-frequency content; ``energy`` the rise of frame
        energy.
    threshold : float
        Sensitivity, dimensionless, 0–100. A frame is an onset when its detection function exceeds the
        method's baseline of the recent past (a scaled moving median or mean) by ``threshold`` times the
        method's calibrated unit. Lower finds
        more (and weaker) onsets.
    min_interval_ms : float
        Minimum gap between two reported onsets, milliseconds, 0–1000. A later onset closer than this
        to the previous one is dropped.
    silence_db : float
        Frames whose windowed RMS level is below this, in dBFS (a full-scale square wave is 0 dBFS, a
        full-scale sine -3 dBFS), never give an onset. -140–0.
    lookahead_ms : float or None
        Look-ahead of the peak picker, milliseconds, 0–200: a peak must be the maximum of the detection
        function up to this far ahead. The detector's latency is this plus one hop. None (the default):
        the method's own default (``OnsetMethod.default_lookahead_ms``: 0, or 10 for ``neural`` and
        ``fused``); the settings hold the number from then on.
    frame_ms : float
        Analysis window length, milliseconds, 10–100. Fixed for the life of a stream.
    hop_ms : float
        Distance between analysis frames, milliseconds, 2–25. Fixed for the life of a stream.
    beats : bool
        Track beats and tempo, and give each onset its drum band (:mod:`server.rhythm`), beside the
        detector; only on the default grid (``frame_ms`` 40, ``hop_ms`` 10). The detector itself ignores it.
    """

    method: str = "superflux"
    threshold: float = 1.0
    min_interval_ms: float = 30.0
    silence_db: float = -90.0
    lookahead_ms: float | None = None
    frame_ms: float = 40.0
    hop_ms: float = 10.0
    beats: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.beats, bool):
            raise SettingsError("beats", self.beats, "must be true or false")
        if self.method not in METHODS:
            raise SettingsError("method", self.method, f"must be one of {', '.join(METHODS)}")
        if self.lookahead_ms is None:
            object.__setattr__(self, "lookahead_ms", METHOD_TABLE[self.method].default_lookahead_ms)
        check_ranges(self, RANGES)
        only = METHOD_TABLE[self.method].grid_ms
        if only is not None:  # a method that runs on one grid only (a network trained on it)
            for name, required in zip(GRID_SETTINGS, only, strict=True):
                if getattr(self, name) != required:
                    reason = f"method {self.method!r} runs only at {name} {required:g}"
                    raise SettingsError(name, getattr(self, name), reason)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], base: DetectorSettings | None = None
    ) -> DetectorSettings:
        """Validate untrusted ``values`` and return new settings.

        Parameters
        ----------
        values : mapping of str to object
            Setting names to values, e.g. parsed from a client's JSON. Numbers may be int or float;
            ``method`` must be a string.
        base : DetectorSettings, optional
            Where unspecified settings come from; the defaults when omitted.

        Raises
        ------
        SettingsError
            For an unknown key, a value of the wrong type, or a value out of range.
        """
        if not isinstance(values, Mapping):
            raise SettingsError("settings", values, "must be an object of setting names to values")
        known = {field.name for field in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise SettingsError(str(key), value, f"unknown setting; known: {', '.join(sorted(known))}")
            if key == "method" and not isinstance(value, str):
                raise SettingsError(key, value, "must be a string")
            if key == "lookahead_ms" and value is None:
                raise SettingsError(key, value, "must be a number (omit it for the method's default)")
        changes = cast(dict[str, Any], dict(values))
        base = base or cls()
        # a look-ahead that was the old method's default follows the method: the new one's default
        if ("method" in changes and "lookahead_ms" not in changes
                and base.lookahead_ms == METHOD_TABLE[base.method].default_lookahead_ms):
            changes["lookahead_ms"] = None
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every effective setting as a plain JSON-compatible dict."""
        return dataclasses.asdict(self)


FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(DetectorSettings))


def settings_tuple(settings: DetectorSettings) -> tuple[Any, ...]:
    """Every field's value in field order: a compact form for pickled detector state."""
    return tuple(getattr(settings, name) for name in FIELD_NAMES)


def settings_from_tuple(values: tuple[Any, ...]) -> DetectorSettings:
    """The settings of a :func:`settings_tuple` (validated again)."""
    return DetectorSettings(*values)
