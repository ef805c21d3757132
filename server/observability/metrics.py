"""The server's metrics, kept and exposed by the standard Prometheus client (``prometheus_client``).

One :class:`MetricSet` per application (an ``AppKey``), each with its own ``CollectorRegistry``, never the
library's global registry. Counters and histograms are updated where things happen; the values of live
objects (streams, subscribers, the pool, the job store, OSC targets) are read at scrape time: the
``/metrics`` handler gathers them (some reads are asynchronous) into a :class:`LiveValues`, and the
registry's :class:`LiveCollector` turns them into samples. Conventions kept:

- a metric is either always labelled or never: every label value that can occur is exported from the start
  (``transient_streams{transport="webrtc"} 0``), so no series appears out of nothing or vanishes at zero;
- counters end in ``_total``, units are base units in the name (``_seconds``), and no gauge ends in ``_sum``,
  ``_count`` or ``_bucket``;
- ``process_*`` (this server process) and ``python_info`` come from the library's collectors,
  ``transient_build_info`` holds the version.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from server import __version__

# Onset latency buckets, seconds: from the audio's arrival to the onset event (look-ahead included).
LATENCY_BUCKETS_S = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
# Run time of a file-analysis job, seconds (a 60 min file takes ~7 s on this project's machine).
JOB_DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

TRANSPORTS = ("websocket", "webrtc")
END_REASONS = ("stopped", "disconnected", "shutdown")  # error codes are added as they happen
REFUSAL_REASONS = ("unauthorized", "forbidden", "origin_not_allowed", "rate_limited")
JOB_STATUSES = ("success", "failed")


@dataclass
class LiveValues:
    """What the ``/metrics`` handler read from the live objects just before the registry is collected."""

    streams_by_transport: Mapping[str, int] = field(default_factory=dict)
    subscribers: int = 0
    audio_received_s: float = 0.0
    audio_dropped_s: float = 0.0
    onsets: int = 0
    lag_max_s: float = 0.0
    lag_all_s: float = 0.0
    jobs_by_state: Mapping[str, int] | None = None  # None: the job store could not be reached
    job_states: tuple[str, ...] = ()
    pool_workers: int = 0
    pool_rebuilds: int = 0
    osc: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # target -> {"sent", "dropped"}


class LiveCollector(Collector):
    """Samples of the :class:`LiveValues` last handed over (all zero before the first scrape)."""

    def __init__(self) -> None:
        self.values = LiveValues()

    def describe(self) -> Iterable[Metric]:
        return []  # names are not known before a scrape; the registry then skips its duplicate check

    def collect(self) -> Iterable[Metric]:
        v = self.values
        streams = GaugeMetricFamily("transient_streams", "live streams of this instance, by transport",
                                    labels=["transport"])
        for transport in sorted({*TRANSPORTS, *v.streams_by_transport}):
            streams.add_metric([transport], v.streams_by_transport.get(transport, 0))
        yield streams
        yield GaugeMetricFamily("transient_subscribers", "subscribers watching live streams",
                                value=v.subscribers)
        yield CounterMetricFamily("transient_audio_received_seconds", "seconds of audio received by live "
                                  "streams", value=v.audio_received_s)
        yield CounterMetricFamily("transient_audio_dropped_seconds", "seconds of audio dropped because "
                                  "analysis fell behind", value=v.audio_dropped_s)
        yield CounterMetricFamily("transient_onsets", "onsets reported by live streams", value=v.onsets)
        yield GaugeMetricFamily("transient_stream_lag_max_seconds", "largest audio backlog waiting for "
                                "analysis in one stream", value=v.lag_max_s)
        yield GaugeMetricFamily("transient_audio_waiting_seconds", "audio waiting for analysis, all streams "
                                "together", value=v.lag_all_s)
        yield GaugeMetricFamily("transient_job_store_up", "1 when the job store answered this scrape, else 0",
                                value=0 if v.jobs_by_state is None else 1)
        if v.jobs_by_state is not None:  # unknown while the store cannot be reached: left out
            jobs = GaugeMetricFamily("transient_jobs", "file analysis tasks by state", labels=["state"])
            for state in v.job_states:
                jobs.add_metric([state], v.jobs_by_state.get(state, 0))
            yield jobs
        yield GaugeMetricFamily("transient_pool_workers", "processes in the detection pool",
                                value=v.pool_workers)
        yield CounterMetricFamily("transient_pool_rebuilds", "times the detection pool was rebuilt after a "
                                  "worker died", value=v.pool_rebuilds)
        sent = CounterMetricFamily("transient_osc_packets_sent", "OSC datagrams sent, by configured target",
                                   labels=["target"])
        dropped = CounterMetricFamily("transient_osc_packets_dropped", "OSC datagrams dropped (socket "
                                      "buffer full, no route, host not resolved), by configured target",
                                      labels=["target"])
        for target, counts in sorted(v.osc.items()):
            sent.add_metric([target], counts.get("sent", 0))
            dropped.add_metric([target], counts.get("dropped", 0))
        yield sent
        yield dropped


class MetricSet:
    """One server's registry and the metrics it updates as it runs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.streams_opened = Counter("transient_streams_opened", "live streams started, by transport",
                                      ["transport"], registry=r)
        self.streams_ended = Counter("transient_streams_ended", "live streams ended, by reason", ["reason"],
                                     registry=r)
        self.onset_latency = Histogram(
            "transient_onset_latency_seconds",
            "time from the arrival of an onset's audio to its event (look-ahead, waiting and analysis)",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.refused = Counter("transient_requests_refused", "requests refused by access control and rate "
                               "limits, by reason", ["reason"], registry=r)
        self.jobs_finished = Counter("transient_jobs_finished", "file analysis tasks this instance finished, "
                                     "by status", ["status"], registry=r)
        self.job_duration = Histogram("transient_job_duration_seconds", "run time of each successful file "
                                      "analysis task, from start to stored result",
                                      buckets=JOB_DURATION_BUCKETS_S, registry=r)
        self.job_audio = Counter("transient_job_audio_seconds", "seconds of audio analysed by file analysis "
                                 "tasks (with transient_job_duration_seconds_sum: real-time factor)",
                                 registry=r)
        for transport in TRANSPORTS:
            self.streams_opened.labels(transport=transport)
        for reason in END_REASONS:
            self.streams_ended.labels(reason=reason)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason=reason)
        for status in JOB_STATUSES:
            self.jobs_finished.labels(status=status)
        Info("transient_build", "the running server's version", registry=r).info(
            {"version": __version__, "python": platform.python_version()})
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.live = LiveCollector()
        r.register(self.live)
        self.ended_audio_s = 0.0  # audio received by streams that have ended
        self.ended_dropped_s = 0.0
        self.ended_onsets = 0

    def job_finished(self, status: str, duration_s: float | None, audio_s: float) -> None:
        """Observer of the job runner: one finished file-analysis task."""
        self.jobs_finished.labels(status=status).inc()
        if duration_s is not None:
            self.job_duration.observe(duration_s)
        self.job_audio.inc(audio_s)


METRICS = web.AppKey("metrics", MetricSet)
