"""DetectorSettings validation: every bad value is named in a SettingsError."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from server.dsp import DetectorSettings
from server.dsp.settings import RANGES
from server.exceptions import SettingsError


def test_defaults_round_trip_through_json() -> None:
    defaults = DetectorSettings()
    as_dict = defaults.to_dict()
    assert set(as_dict) == {f.name for f in dataclasses.fields(DetectorSettings)}
    assert as_dict["method"] == "superflux"
    assert DetectorSettings.from_mapping(json.loads(json.dumps(as_dict))) == defaults


def test_from_mapping_takes_unspecified_values_from_base() -> None:
    base = DetectorSettings.from_mapping({"threshold": 2.5, "method": "hfc"})
    changed = DetectorSettings.from_mapping({"min_interval_ms": 80}, base=base)
    assert changed.threshold == 2.5 and changed.method == "hfc" and changed.min_interval_ms == 80.0
    assert isinstance(changed.min_interval_ms, float)
    assert DetectorSettings.from_mapping({}) == DetectorSettings()


@pytest.mark.parametrize(
    ("values", "name", "reason"),
    [
        ({"thresh": 1.0}, "thresh", "unknown setting"),
        ({"method": "spectral"}, "method", "must be one of superflux, superflux_half, complex, hfc, energy"),
        ({"method": 3}, "method", "must be a string"),
        ({"threshold": "high"}, "threshold", "must be a number"),
        ({"threshold": True}, "threshold", "must be a number"),
        ({"threshold": None}, "threshold", "must be a number"),
        ({"threshold": -0.5}, "threshold", "between 0 and 100"),
        ({"threshold": math.nan}, "threshold", "between"),
        ({"silence_db": 3}, "silence_db", "between -140 and 0"),
        ({"min_interval_ms": 5000}, "min_interval_ms", "between 0 and 1000"),
        ({"lookahead_ms": -1}, "lookahead_ms", "between 0 and 200"),
        ({"lookahead_ms": math.inf}, "lookahead_ms", "between"),
        ({"frame_ms": 5}, "frame_ms", "between 10 and 100"),
        ({"hop_ms": 50}, "hop_ms", "between 2 and 25"),
        ({"beats": 1}, "beats", "must be true or false"),
        ({"beats": "true"}, "beats", "must be true or false"),
    ],
)
def test_bad_values_are_named(values: dict[str, object], name: str, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        DetectorSettings.from_mapping(values)
    assert info.value.name == name
    assert info.value.value == values[name] or values[name] != values[name]  # NaN is not equal to itself
    assert reason in str(info.value) and name in str(info.value)


def test_non_mapping_rejected() -> None:
    with pytest.raises(SettingsError, match="must be an object"):
        DetectorSettings.from_mapping([("threshold", 1.0)])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(RANGES))
def test_range_bounds_are_inclusive(name: str) -> None:
    low, high = RANGES[name]
    assert getattr(DetectorSettings.from_mapping({name: low}), name) == low
    assert getattr(DetectorSettings.from_mapping({name: high}), name) == high


def test_settings_are_frozen() -> None:
    settings = DetectorSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.threshold = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(("method", "lookahead_ms"), [("superflux", 0.0), ("superflux_half", 0.0),
                                                      ("complex", 0.0), ("hfc", 0.0), ("energy", 0.0),
                                                      ("neural", 10.0), ("fused", 10.0)])
def test_an_omitted_look_ahead_is_the_methods_own(method: str, lookahead_ms: float) -> None:
    assert DetectorSettings(method=method).lookahead_ms == lookahead_ms
    assert DetectorSettings.from_mapping({"method": method}).lookahead_ms == lookahead_ms
    assert DetectorSettings.from_mapping({"method": method}).to_dict()["lookahead_ms"] == lookahead_ms
    assert DetectorSettings(method=method, lookahead_ms=30).lookahead_ms == 30.0


def test_a_method_change_moves_a_default_look_ahead_but_keeps_a_chosen_one() -> None:
    base = DetectorSettings()
    neural = DetectorSettings.from_mapping({"method": "neural"}, base=base)
    assert neural.lookahead_ms == 10.0
    assert DetectorSettings.from_mapping({"method": "superflux"}, base=neural).lookahead_ms == 0.0
    chosen = DetectorSettings.from_mapping({"lookahead_ms": 20}, base=base)
    assert DetectorSettings.from_mapping({"method": "fused"}, base=chosen).lookahead_ms == 20.0
    both = DetectorSettings.from_mapping({"method": "neural", "lookahead_ms": 0}, base=base)
    assert both.lookahead_ms == 0.0
    assert DetectorSettings.from_mapping({"threshold": 2}, base=neural).lookahead_ms == 10.0
    with pytest.raises(SettingsError, match="lookahead_ms"):
        DetectorSettings.from_mapping({"lookahead_ms": None})
