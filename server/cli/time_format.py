"""How the client commands print an onset's (or beat's) time: ``--time-format s|ms|samples``.

The server's messages always carry seconds; the commands convert only what they print as text or CSV. The
CSV column is named with its unit (``time_s``, ``time_ms``, ``time_samples``), as in the upload page's
download (server/static/js/exporters.js).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

# name -> (seconds and sample rate -> text, exact text for CSV)
TimeText = Callable[[float, int], str]
def _samples(time_s: float, rate: int) -> str:
    return str(round(time_s * rate))


TIME_FORMATS: dict[str, tuple[TimeText, TimeText]] = {
    "s": (lambda time_s, rate: f"{time_s:.6f}", lambda time_s, rate: repr(time_s)),
    "ms": (lambda time_s, rate: f"{time_s * 1000.0:.3f}",
           lambda time_s, rate: repr(round(time_s * 1000.0, 6))),
    "samples": (_samples, _samples),
}
DEFAULT = "s"


def add_time_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time-format", choices=tuple(TIME_FORMATS), default=DEFAULT,
                        help="times in text and CSV output (onsets; beats too in analyze's CSV): seconds "
                        "(6 decimals, the default), milliseconds (3 decimals) or the sample index at the "
                        "stream's or file's rate "
                        "(JSON output always carries the server's seconds)")


def time_text(time_s: float, fmt: str, sample_rate: int) -> str:
    """``time_s`` as text output shows it."""
    return TIME_FORMATS[fmt][0](time_s, sample_rate)


def time_csv(time_s: float, fmt: str, sample_rate: int) -> str:
    """``time_s`` as CSV output writes it: exact (the shortest text that reads back as the same float)."""
    return TIME_FORMATS[fmt][1](time_s, sample_rate)


def time_column(fmt: str) -> str:
    """The CSV column's name: ``time_s``, ``time_ms`` or ``time_samples``."""
    return f"time_{fmt}"
