"""``GET /metrics`` moves with streams, subscribers, onsets and jobs; ``/readyz``; structured log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import __version__
from server.observability.logs import ContextFormatter
from tests.analysis_files import make_file, post_file, wait_finished
from tests.conftest import StartServer
from tests.metrics_scrape import parse, scrape
from tests.stream_client import Client, Publisher, of_type
from tests.test_osc_output import OscReceiver

SAMPLE_RATE = 16000


def clicks(duration_s: float, every_s: float) -> np.ndarray:
    samples = np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)
    for t in np.arange(0.2, duration_s - 0.2, every_s):
        samples[round(t * SAMPLE_RATE):][:16] = 0.9
    return samples


def check_conventions(text: str) -> dict[str, str]:
    """Parse ``text`` with the Prometheus client's own parser and check the conventions every scrape keeps:
    a sample name is always labelled or never; no gauge is named like a histogram's parts; counters end in
    ``_total``. Returns each family's type by name."""
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        if family.type == "gauge":
            assert not family.name.endswith(("_sum", "_count", "_bucket", "_total")), family.name
        labelled: dict[str, set[bool]] = {}
        for sample in family.samples:
            labelled.setdefault(sample.name, set()).add(bool(sample.labels))
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
        assert all(len(kinds) == 1 for kinds in labelled.values()), (family.name, labelled)
    return types


async def scrape_text(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_metrics_follow_streams_subscribers_onsets_and_jobs(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    base = str(server.make_url("")).rstrip("/")
    types = check_conventions(await scrape_text(http, base))
    assert types["transient_streams"] == "gauge" and types["transient_onsets"] == "counter"
    assert types["transient_onset_latency_seconds"] == "histogram"
    assert types["transient_job_duration_seconds"] == "histogram"
    before = await scrape(http, base)
    # Every label value that can occur is there from the start, at 0; nothing unlabelled beside it.
    assert before['transient_streams{transport="websocket"}'] == 0
    assert before['transient_streams{transport="webrtc"}'] == 0
    assert "transient_streams" not in before
    assert before['transient_streams_opened_total{transport="webrtc"}'] == 0
    assert before['transient_streams_ended_total{reason="stopped"}'] == 0
    assert before['transient_requests_refused_total{reason="rate_limited"}'] == 0
    assert before['transient_jobs_finished_total{status="success"}'] == 0
    assert before["transient_onsets_total"] == 0
    assert before['transient_jobs{state="success"}'] == 0
    assert before["transient_job_store_up"] == 1
    assert before["transient_pool_workers"] == 2
    # Process metrics and the build.
    assert before["process_resident_memory_bytes"] > 1e6 and before["process_cpu_seconds_total"] > 0
    build = f'transient_build_info{{python="{platform.python_version()}",version="{__version__}"}}'
    assert before[build] == 1

    publisher = await Publisher.open(http, server)
    started = await publisher.start(SAMPLE_RATE)
    watcher = await Client.connect(http, server, f"/api/v3/streams/{started['stream_id']}/events")
    assert (await watcher.receive())["type"] == "subscribed"
    await publisher.stream(clicks(2.0, 0.25), SAMPLE_RATE, chunk_s=0.02, pace=0.5)
    during = await scrape(http, base)
    assert during['transient_streams{transport="websocket"}'] == 1
    assert during['transient_streams{transport="webrtc"}'] == 0
    assert during["transient_subscribers"] == 1
    assert during["transient_audio_received_seconds_total"] == pytest.approx(2.0)
    assert 0 <= during["transient_stream_lag_max_seconds"] <= during["transient_audio_waiting_seconds"] + 1e-9
    messages = await publisher.stop()
    onsets = len(of_type(messages, "onset"))
    assert onsets >= 5
    await watcher.receive_all()

    status, body = await post_file(http, base, make_file(tmp_path, "wav", duration_s=2.0).path,
                                   filename="a.wav")
    assert status == 202
    assert (await wait_finished(http, base, body["task_id"]))["status"] == "success"

    text = await scrape_text(http, base)
    check_conventions(text)
    after = parse(text)
    # Back to zero, still there.
    assert after['transient_streams{transport="websocket"}'] == 0
    assert after["transient_subscribers"] == 0
    assert after['transient_streams_opened_total{transport="websocket"}'] == 1
    assert after['transient_streams_ended_total{reason="stopped"}'] == 1
    assert after["transient_audio_received_seconds_total"] == pytest.approx(2.0)
    assert after["transient_onsets_total"] == onsets
    assert after["transient_onset_latency_seconds_count"] == onsets
    assert after['transient_onset_latency_seconds_bucket{le="+Inf"}'] == onsets
    assert 0 < after["transient_onset_latency_seconds_sum"] / onsets < 5.0
    assert after['transient_jobs{state="success"}'] == 1
    # Job throughput and durations.
    assert after['transient_jobs_finished_total{status="success"}'] == 1
    assert after['transient_jobs_finished_total{status="failed"}'] == 0
    assert after["transient_job_duration_seconds_count"] == 1
    assert 0 < after["transient_job_duration_seconds_sum"] < 60
    assert after["transient_job_audio_seconds_total"] == pytest.approx(2.0)
    assert after["transient_audio_dropped_seconds_total"] == 0
    assert after["transient_pool_rebuilds_total"] == 0


async def test_osc_packets_sent_and_dropped_per_target(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    receiver = await OscReceiver.open()
    try:
        server = await start_server(osc_targets=f"lights=127.0.0.1:{receiver.port},void=nowhere.invalid:9000")
        base = str(server.make_url("")).rstrip("/")
        before = await scrape(http, base)
        assert before['transient_osc_packets_dropped_total{target="void"}'] == 0
        assert before['transient_osc_packets_sent_total{target="lights"}'] == 0
        publisher = await Publisher.open(http, server)
        await publisher.start(SAMPLE_RATE, settings={"osc": ["lights", "void"], "beats": False})
        await publisher.stream(clicks(2.0, 0.25), SAMPLE_RATE, chunk_s=0.02)
        onsets = len(of_type(await publisher.stop(), "onset"))
        assert onsets >= 5
        await receiver.take(onsets)
        after = await scrape(http, base)
    finally:
        receiver.close()
        await asyncio.sleep(0.01)
    assert after['transient_osc_packets_sent_total{target="lights"}'] == onsets
    assert after['transient_osc_packets_dropped_total{target="lights"}'] == 0
    assert after['transient_osc_packets_dropped_total{target="void"}'] == onsets  # `.invalid` never resolves
    assert after['transient_osc_packets_sent_total{target="void"}'] == 0


async def test_each_app_has_its_own_registry(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    one, two = await start_server(), await start_server()
    publisher = await Publisher.open(http, one)
    await publisher.start(SAMPLE_RATE)
    await publisher.stream(clicks(1.0, 0.25), SAMPLE_RATE)
    await publisher.stop()
    counted = await scrape(http, str(one.make_url("")).rstrip("/"))
    other = await scrape(http, str(two.make_url("")).rstrip("/"))
    assert counted['transient_streams_opened_total{transport="websocket"}'] == 1
    assert other['transient_streams_opened_total{transport="websocket"}'] == 0
    assert other["transient_onset_latency_seconds_count"] == 0
    assert counted["transient_onset_latency_seconds_count"] > 0


async def test_readyz_is_ready_until_shutdown_begins(start_server: StartServer,
                                                    http: aiohttp.ClientSession) -> None:
    server = await start_server()
    async with http.get(server.make_url("/readyz")) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ready"
    await server.app.shutdown()  # what SIGTERM does first; the socket still answers meanwhile
    async with http.get(server.make_url("/readyz")) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "unavailable" and "shutting down" in body["problems"][0]


async def test_stream_log_lines_carry_the_stream_id(
    start_server: StartServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server()
    with caplog.at_level(logging.INFO, logger="server.streams"):
        publisher = await Publisher.open(http, server)
        stream_id = (await publisher.start(SAMPLE_RATE))["stream_id"]
        await publisher.send_audio(np.zeros(1600, dtype=np.float32))
        await publisher.stop()
        for _ in range(100):
            if len(caplog.records) >= 2:
                break
            await asyncio.sleep(0.05)
    formatter = ContextFormatter("%(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    assert any(line.startswith("stream started") and f"stream_id={stream_id}" in line for line in lines)
    ended = [line for line in lines if line.startswith("stream ended")]
    assert ended and f"stream_id={stream_id}" in ended[0] and "0.100 s received" in ended[0]


def test_context_formatter_quotes_values_and_keeps_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    record.task_id = "abc"
    record.client = 'a b"c'
    record.exc_text = "Traceback: boom"
    line = ContextFormatter("%(message)s").format(record)
    first, _, rest = line.partition("\n")
    assert first == 'failed task_id=abc client="a b\\"c"'
    assert rest == "Traceback: boom"
    assert json.dumps(first)  # one line
    assert re.match(r"^failed", first)
