"""Detector settings as command-line flags (``--threshold 2 --method hfc``), as ``aubioonset`` users expect.

The flags are made from the fields of :class:`~server.dsp.DetectorSettings`, so a new setting gets its flag
with no change here: ``min_interval_ms`` becomes ``--min-interval-ms``, its type comes from the default, its
help from the class's "Attributes" docstring section, and ``--method``'s choices from
:data:`server.dsp.METHODS`. ``--settings`` still takes the whole object, as JSON or as
``key=value[,key=value...]``; a flag wins over the same key in ``--settings``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from typing import Any

from server.dsp import METHODS, DetectorSettings

DEST_PREFIX = "setting_"  # namespace attribute of a setting's flag: setting_threshold, ...


def flag(name: str) -> str:
    """The flag of the setting ``name``: ``min_interval_ms`` → ``--min-interval-ms``."""
    return "--" + name.replace("_", "-")


def field_help(doc: str | None) -> dict[str, str]:
    """Setting name → the first sentence of its description in a numpydoc "Attributes" section."""
    helps: dict[str, str] = {}
    name: str | None = None
    for line in (doc or "").splitlines():
        header = re.match(r"^\s{4}(\w+) : ", line)
        if header:
            name = header.group(1)
            helps[name] = ""
        elif name is not None and line.strip():
            helps[name] = (helps[name] + " " + line.strip()).strip()
        elif name is not None and not line.strip() and helps[name]:
            name = None
    def plain(text: str) -> str:  # reST roles and literals as plain words
        return re.sub(r":\w+:`~?([\w.]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text).replace("``", "")

    return {key: plain(text).split(". ")[0].rstrip(".") for key, text in helps.items()}


def add_settings_options(parser: argparse.ArgumentParser, extra_keys: str = "") -> None:
    """``--settings`` and one flag per detector setting, in their own help group."""
    group = parser.add_argument_group(
        "detector settings", "each setting as a flag (see docs/protocol.md, 'Detector settings'); "
        "a flag wins over the same key in --settings")
    group.add_argument("--settings", default=None, metavar="JSON|KEY=VALUE,...",
                       help="settings as a JSON object, e.g. '{\"threshold\": 2, \"method\": \"hfc\"}', "
                       f"or as key=value pairs, e.g. threshold=2,method=hfc{extra_keys}")
    helps = field_help(DetectorSettings.__doc__)
    defaults = DetectorSettings()
    for field in dataclasses.fields(DetectorSettings):
        default = getattr(defaults, field.name)
        options: dict[str, Any] = {"dest": DEST_PREFIX + field.name, "default": None}
        if field.name == "method":
            options.update(choices=list(METHODS), metavar="|".join(METHODS))
            helps[field.name] = "onset detection function (the server's methods, docs/protocol.md)"
        elif isinstance(default, bool):
            options.update(action=argparse.BooleanOptionalAction)
        elif isinstance(default, int | float):
            options.update(type=float, metavar=field.name.rsplit("_", 1)[-1].upper()
                           if field.name.endswith(("_ms", "_db", "_s", "_hz")) else "N")
        help_text = helps.get(field.name) or f"the detector setting {field.name}"
        group.add_argument(flag(field.name), help=f"{help_text} (default {default})", **options)


def parse_pairs(text: str) -> dict[str, Any]:
    """``threshold=2,method=hfc`` → ``{"threshold": 2, "method": "hfc"}``; each value read as JSON when it
    is JSON (numbers, true/false, lists), else as a string. Raises :class:`ValueError`."""
    values: dict[str, Any] = {}
    for pair in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", text))):
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw.strip()
    return values


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any] | None:
    """The settings mapping of ``--settings`` and the setting flags, or ``None`` when none was given.

    Malformed ``--settings`` is a usage error (exit 2) that names both accepted forms and the flags.
    The values are not validated here: the server (or :class:`DetectorSettings`) does that.
    """
    values: dict[str, Any] = {}
    text: str | None = args.settings
    if text is not None:
        if text.lstrip().startswith("{"):
            try:
                loaded = json.loads(text)
            except ValueError as exc:
                parser.error(f"--settings is not valid JSON: {exc}")
            if not isinstance(loaded, dict):
                parser.error(f"--settings must be a JSON object, got {text!r}")
            values.update(loaded)
        else:
            try:
                values.update(parse_pairs(text))
            except ValueError as exc:
                parser.error(f"--settings: {exc}; give a JSON object ('{{\"threshold\": 2}}'), key=value "
                             "pairs (threshold=2,method=hfc) or the flags (--threshold 2 --method hfc)")
    for field in dataclasses.fields(DetectorSettings):
        value = getattr(args, DEST_PREFIX + field.name, None)
        if value is not None:
            values[field.name] = value
    return values if text is not None or values else None
