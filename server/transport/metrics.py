"""``GET /metrics`` (Prometheus text format) and ``GET /readyz`` (ready to take work).

Counters and histograms live in the app's :class:`~server.observability.metrics.MetricSet` (its own
``prometheus_client`` registry), fed by observers hooked into the stream registry and service and the job
runner; the live objects' values are read at scrape time. See docs/protocol.md, "Metrics".
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from server import appkeys
from server.exceptions import StorageUnavailable
from server.jobs.model import JobStatus
from server.observability.metrics import METRICS, LiveValues, MetricSet
from server.stream.session import StreamSession

log = logging.getLogger("server.streams")

READY_TIMEOUT_S = 5.0  # a pool or store that does not answer within this is not ready
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus reads


@dataclass
class Readiness:
    shutting_down: bool = False


READINESS = web.AppKey("readiness", Readiness)


def _stream_added(metrics: MetricSet) -> Any:
    def added(session: StreamSession) -> None:
        metrics.streams_opened.labels(transport=session.transport).inc()
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
        metrics.streams_ended.labels(reason=reason).inc()
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


async def live_values(app: web.Application, metrics: MetricSet) -> LiveValues:
    """The values read from the live objects for one scrape."""
    streams = app.get(appkeys.STREAMS)
    sessions = list(streams.registry) if streams is not None else []
    by_transport: dict[str, int] = {}
    for session in sessions:
        by_transport[session.transport] = by_transport.get(session.transport, 0) + 1
    hub = app.get(appkeys.HUB)
    subscribers = sum(int(entry.get("subscribers", 0)) for entry in await hub.streams()) if hub else 0
    lags = [s.lag_s for s in sessions]
    pool = app.get(appkeys.POOL)
    return LiveValues(
        streams_by_transport=by_transport,
        subscribers=subscribers,
        audio_received_s=metrics.ended_audio_s + sum(s.received_s for s in sessions),
        audio_dropped_s=metrics.ended_dropped_s + sum(s.dropped_s for s in sessions),
        onsets=metrics.ended_onsets + sum(s.onsets for s in sessions),
        lag_max_s=max(lags, default=0.0),
        lag_all_s=sum(lags),
        jobs_by_state=await _job_counts(app),
        job_states=tuple(state.value for state in JobStatus),
        pool_workers=pool.workers if pool else 0,
        pool_rebuilds=pool.rebuilds if pool else 0,
        osc=streams.osc.counters() if streams is not None else {},
    )


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.live.values = await live_values(request.app, metrics)
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE})


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
    jobs = app.get(appkeys.JOBS)
    if jobs is not None and jobs.runner is not None:
        jobs.runner.on_finished.append(metrics.job_finished)


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
