"""Metric objects and their Prometheus text exposition (format 0.0.4).

Counters and histograms are updated where things happen; gauges are read at scrape time from the live
objects (streams, pool, job store) by the ``/metrics`` endpoint. Everything lives in one
:class:`MetricSet` per application (an ``AppKey``), never in module globals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

Labels = tuple[tuple[str, str], ...]

# Onset latency buckets, seconds: from the audio's arrival to the onset event (look-ahead included).
LATENCY_BUCKETS_S = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in labels) + "}"


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def sample_line(name: str, labels: Labels, value: float) -> str:
    return f"{name}{format_labels(labels)} {format_value(value)}"


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {escape(help_text)}", f"# TYPE {name} {kind}"]


@dataclass
class Counter:
    """A monotonically increasing value per label set."""

    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = header(self.name, "counter", self.help)
        values = self.values or {(): 0.0}
        lines += [sample_line(self.name, labels, value) for labels, value in sorted(values.items())]
        return lines


@dataclass
class Histogram:
    """Observations counted into cumulative ``le`` buckets, with their sum and count."""

    name: str
    help: str
    buckets: Sequence[float]
    counts: list[int] = field(init=False)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        self.sum += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                break

    def render(self) -> list[str]:
        lines = header(self.name, "histogram", self.help)
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            lines.append(sample_line(self.name + "_bucket", (("le", format_value(bound)),), cumulative))
        lines.append(sample_line(self.name + "_bucket", (("le", "+Inf"),), self.count))
        lines.append(sample_line(self.name + "_sum", (), self.sum))
        lines.append(sample_line(self.name + "_count", (), self.count))
        return lines


def gauge(name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> list[str]:
    """A gauge's lines from values read now."""
    return header(name, "gauge", help_text) + [sample_line(name, labels, value) for labels, value in samples]


def counter_now(name: str, help_text: str, value: float) -> list[str]:
    """A counter whose total is computed at scrape time."""
    return [*header(name, "counter", help_text), sample_line(name, (), value)]


class MetricSet:
    """The counters and histograms one server updates as it runs."""

    def __init__(self) -> None:
        self.streams_opened = Counter("transient_streams_opened_total", "live streams started")
        self.streams_ended = Counter("transient_streams_ended_total", "live streams ended, by reason")
        self.ended_audio_s = 0.0  # audio received by streams that have ended
        self.ended_dropped_s = 0.0
        self.ended_onsets = 0
        self.onset_latency = Histogram(
            "transient_onset_latency_seconds",
            "time from the arrival of an onset's audio to its event (look-ahead, waiting and analysis)",
            LATENCY_BUCKETS_S)
        self.refused = Counter("transient_requests_refused_total",
                               "requests refused by access control and rate limits, by reason")

    def render(self) -> list[str]:
        return [*self.streams_opened.render(), *self.streams_ended.render(), *self.onset_latency.render(),
                *self.refused.render()]


METRICS = web.AppKey("metrics", MetricSet)
