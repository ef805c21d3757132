"""``GET /metrics`` (Prometheus text format) and ``GET /readyz`` (ready to take work).

Counters and the latency histogram live in the app's :class:`~server.observability.metrics.MetricSet`,
fed by observers hooked into the stream registry and service; gauges are read from the live objects at
scrape time. See docs/protocol.md, "Metrics".
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from server import appkeys
from server.exceptions import StorageUnavailable
from server.jobs.model import JobStatus
from server.observability.metrics import METRICS, MetricSet, counter_now, gauge
from server.stream.session import StreamSession

log = logging.getLogger("server.streams")

READY_TIMEOUT_S = 5.0  # a pool or store that does not answer within this is not ready
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Readiness:
    shutting_down: bool = False


READINESS = web.AppKey("readiness", Readiness)


def _stream_added(metrics: MetricSet) -> Any:
    def added(session: StreamSession) -> None:
        metrics.streams_opened.inc(transport=session.transport)
        log.info("stream started: %d Hz, %d channel(s)", session.format.sample_rate, session.format.channels,
                 extra={"stream_id": session.stream_id, "transport": session.transport,
                        "client": session.client})

    return added


def _stream_removed(metrics: MetricSet) -> Any:
    def removed(session: StreamSession) -> None:
        summary = session.describe()
        metrics.ended_audio_s += session.received_s
        metrics.ended_dropped_s += session.dropped_s
        metrics.ended_onsets += session.onsets
        reason = session.end_reason or "unknown"
        metrics.streams_ended.inc(reason=reason)
        log.info("stream ended (%s): %.3f s received, %.3f s dropped, %d onsets", reason,
                 summary["received_s"], summary["dropped_s"], summary["onsets"],
                 extra={"stream_id": session.stream_id, "transport": session.transport})

    return removed


async def _job_counts(app: web.Application) -> dict[str, int] | None:
    """Jobs by state; ``None`` when the (shared) store cannot be reached."""
    jobs = app.get(appkeys.JOBS)
    if jobs is None:
        return {}
    store: Any = jobs.store
    counter = getattr(store, "count_by_status", None)  # stores that can count every state
    try:
        if counter is not None:
            counts: dict[str, int] = await counter()
            return counts
        return {JobStatus.PENDING.value: await store.count_waiting()}
    except StorageUnavailable:
        return None


async def metrics_handler(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[METRICS]
    lines: list[str] = []
    streams = app.get(appkeys.STREAMS)
    sessions = list(streams.registry) if streams is not None else []
    by_transport: dict[str, int] = {}
    for session in sessions:
        by_transport[session.transport] = by_transport.get(session.transport, 0) + 1
    lines += gauge("transient_streams", "live streams of this instance, by transport",
                   [((("transport", name),), count) for name, count in sorted(by_transport.items())]
                   or [((), 0)])
    hub = app.get(appkeys.HUB)
    subscribers = sum(int(entry.get("subscribers", 0)) for entry in await hub.streams()) if hub else 0
    lines += gauge("transient_subscribers", "subscribers watching live streams", [((), subscribers)])
    lines += counter_now("transient_audio_received_seconds_total",
                         "seconds of audio received by live streams",
                         metrics.ended_audio_s + sum(s.received_s for s in sessions))
    lines += counter_now("transient_audio_dropped_seconds_total",
                         "seconds of audio dropped because analysis fell behind",
                         metrics.ended_dropped_s + sum(s.dropped_s for s in sessions))
    lines += counter_now("transient_onsets_total", "onsets reported by live streams",
                         metrics.ended_onsets + sum(s.onsets for s in sessions))
    lags = [s.lag_s for s in sessions]
    lines += gauge("transient_stream_lag_seconds_max",
                   "largest audio backlog waiting for analysis in one stream",
                   [((), max(lags, default=0.0))])
    lines += gauge("transient_stream_lag_seconds_sum", "audio waiting for analysis, all streams",
                   [((), sum(lags))])
    counts = await _job_counts(app)
    if counts is not None:  # left out while the job store cannot be reached
        lines += gauge("transient_jobs", "file analysis tasks by state",
                       [((("state", state.value),), counts.get(state.value, 0)) for state in JobStatus])
    pool = app.get(appkeys.POOL)
    lines += gauge("transient_pool_workers", "processes in the detection pool",
                   [((), pool.workers if pool else 0)])
    lines += counter_now("transient_pool_rebuilds_total",
                         "times the detection pool was rebuilt after a worker died",
                         pool.rebuilds if pool else 0)
    lines += metrics.render()
    return web.Response(text="\n".join(lines) + "\n", headers={"Content-Type": CONTENT_TYPE})


async def _check(app: web.Application) -> list[str]:
    problems: list[str] = []
    if app[READINESS].shutting_down:
        problems.append("the server is shutting down")
    pool = app.get(appkeys.POOL)
    if pool is None:
        problems.append("the detection pool is not running")
    else:
        try:
            await asyncio.wait_for(pool.run(os.getpid), READY_TIMEOUT_S)
        except Exception as exc:
            problems.append(f"the detection pool does not answer: {type(exc).__name__} {exc}".strip())
    jobs = app.get(appkeys.JOBS)
    if jobs is not None:
        try:
            await asyncio.wait_for(jobs.store.count_waiting(), READY_TIMEOUT_S)
        except Exception as exc:
            problems.append(f"the job store does not answer: {type(exc).__name__} {exc}".strip())
        problems += await jobs.storage_problems()
    return problems


async def readyz(request: web.Request) -> web.Response:
    problems = await _check(request.app)
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def _observe(app: web.Application) -> None:
    """Hook the metrics' observers into the stream service (on start-up, after every cleanup context)."""
    metrics = app[METRICS]
    streams = app.get(appkeys.STREAMS)
    if streams is not None:
        streams.registry.on_add.append(_stream_added(metrics))
        streams.registry.on_remove.append(_stream_removed(metrics))
        streams.on_onset = metrics.onset_latency.observe


async def _on_shutdown(app: web.Application) -> None:
    app[READINESS].shutting_down = True


def setup(app: web.Application) -> None:
    """Route ``/metrics`` and ``/readyz``; the services observed are built in app.py, before any request."""
    if METRICS not in app:
        app[METRICS] = MetricSet()
    app[READINESS] = Readiness()
    app.on_startup.append(_observe)
    app.on_shutdown.insert(0, _on_shutdown)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz)
