"""Faults while streams and jobs run: pool workers killed, SIGTERM on the server, and the restart after it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from server import appkeys
from tests.analysis_files import make_file, post_file, wait_finished
from tests.conftest import ServerProcess, StartServer
from tests.metrics_scrape import scrape
from tests.processes import running
from tests.stream_client import Client, Publisher, of_type

SAMPLE_RATE = 16000
WAIT_S = 60.0


def clicks(duration_s: float) -> np.ndarray:
    samples = np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.float32)
    for t in np.arange(0.1, duration_s - 0.1, 0.25):
        samples[round(t * SAMPLE_RATE):][:16] = 0.9
    return samples


async def test_killed_pool_workers_while_streams_and_jobs_run(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server(max_buffer_s=20.0)
    base = str(server.make_url("")).rstrip("/")
    pool = server.app[appkeys.POOL]
    audio = make_file(tmp_path, "wav", duration_s=60.0).path
    publishers = [await Publisher.open(http, server) for _ in range(2)]
    for publisher in publishers:
        await publisher.start(SAMPLE_RATE)
    samples = clicks(3.0)
    half = len(samples) // 2

    async def feed(part: np.ndarray) -> None:
        await asyncio.gather(*(p.stream(part, SAMPLE_RATE, chunk_s=0.02, pace=0.3) for p in publishers))

    await feed(samples[:half])
    task_ids = []
    for _ in range(2):
        status, body = await post_file(http, base, audio, filename="long.wav")
        assert status == 202
        task_ids.append(body["task_id"])
    for _ in range(200):  # until a job is being analysed
        async with http.get(f"{base}/api/v3/analysis/{task_ids[0]}") as resp:
            if (await resp.json())["status"] == "processing":
                break
        await asyncio.sleep(0.02)
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)  # workers of the server under test, by pid
    await feed(samples[half:])
    results = [await publisher.stop() for publisher in publishers]
    for messages in results:  # both streams went on to the end and stopped normally
        assert of_type(messages, "stopped")[0]["duration"] == pytest.approx(3.0)
        assert messages[-1]["code"] == 1000
        late = [m["time"] for m in of_type(messages, "onset") if m["time"] > 2.0]
        assert len(late) >= 3  # onsets after the fault are still found
    warned = [m for messages in results for m in of_type(messages, "warning")]
    assert all(m["code"] == "pool_restarted" for m in warned)
    finished = [await wait_finished(http, base, task_id, monotonic=False) for task_id in task_ids]
    assert [f["status"] for f in finished] == ["success", "success"]
    status, body = await post_file(http, base, audio, filename="again.wav")  # a run with no fault
    reference = await wait_finished(http, base, body["task_id"])
    for result in finished:  # a job run again gives what an undisturbed run gives
        assert result["result"]["onsets"] == reference["result"]["onsets"]
    assert pool.rebuilds >= 1
    metrics = await scrape(http, base)
    assert metrics["transient_pool_rebuilds_total"] == pool.rebuilds
    async with http.get(f"{base}/readyz") as resp:
        assert resp.status == 200


def stored_states(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return dict(db.execute("SELECT task_id, status FROM jobs").fetchall())


async def receive_all(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    while True:
        message = await ws.receive(timeout=WAIT_S)
        if message.type == aiohttp.WSMsgType.TEXT:
            out.append(json.loads(message.data))
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            out.append({"type": "<closed>", "code": ws.close_code})
            return out


async def _jobs_and_a_stream(http: aiohttp.ClientSession, url: str, audio: Path, jobs: int
                             ) -> tuple[list[str], aiohttp.ClientWebSocketResponse, str]:
    """``jobs`` file jobs of ``audio`` posted, and a publisher started: task ids, publisher, stream id."""
    task_ids = []
    for _ in range(jobs):
        status, body = await post_file(http, url, audio, filename="long.wav")
        assert status == 202
        task_ids.append(body["task_id"])
    publisher = await http.ws_connect(url + "/api/v3/stream")
    await publisher.send_str(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "channels": 1,
                                         "encoding": "pcm_f32le"}))
    started = json.loads((await publisher.receive(timeout=WAIT_S)).data)
    assert started["type"] == "started", started
    return task_ids, publisher, started["stream_id"]


async def test_sigterm_closes_sockets_with_1001_requeues_jobs_exits_0_and_restart_finishes_them(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    proc = server_process("--workers", "2", data_dir=data_dir)
    audio = make_file(tmp_path, "wav", duration_s=60.0).path
    async with aiohttp.ClientSession() as http:
        task_ids, publisher, stream_id = await _jobs_and_a_stream(http, proc.url, audio, 4)
        watcher = await http.ws_connect(f"{proc.url}/api/v3/streams/{stream_id}/events")
        assert json.loads((await watcher.receive(timeout=WAIT_S)).data)["type"] == "subscribed"
        await publisher.send_bytes(clicks(1.0).tobytes())
        uploader = await http.ws_connect(proc.url + "/api/v3/upload")
        await uploader.send_str(json.dumps({"type": "upload", "filename": "x.wav", "size": 1000}))
        upload_task = json.loads((await uploader.receive(timeout=WAIT_S)).data)["task_id"]
        await uploader.send_bytes(b"\0" * 100)
        for _ in range(500):
            if "processing" in stored_states(data_dir).values():
                break
            await asyncio.sleep(0.02)

        proc.signal(signal.SIGTERM)
        published, watched, uploaded = await asyncio.gather(
            receive_all(publisher), receive_all(watcher), receive_all(uploader))
        assert any(m.get("code") == "shutdown" for m in published if m["type"] == "error"), published
        assert published[-1] == {"type": "<closed>", "code": 1001}
        assert of_type(published, "stopped") == []
        ended = of_type(watched, "ended")  # type: ignore[arg-type]
        assert ended and ended[0]["reason"] == "shutdown" and ended[0]["duration"] == pytest.approx(1.0)
        assert watched[-1]["type"] == "<closed>"
        assert any(m.get("code") == "shutdown" for m in uploaded if m["type"] == "error")
        assert uploaded[-1] == {"type": "<closed>", "code": 1001}
        assert await asyncio.to_thread(proc.wait, 60.0) == 0

        states = stored_states(data_dir)
        assert "processing" not in states.values()  # finished or put back in the queue
        assert {states[task_id] for task_id in task_ids} <= {"pending", "success"}
        assert states[upload_task] == "failed"

        again = server_process("--workers", "2", data_dir=data_dir)
        finished = [await wait_finished(http, again.url, task_id, monotonic=False) for task_id in task_ids]
        assert [f["status"] for f in finished] == ["success"] * 4
        assert len({json.dumps(f["result"]["onsets"]) for f in finished}) == 1
        async with http.get(f"{again.url}/api/v3/analysis/{upload_task}") as resp:
            failed = await resp.json()
        assert failed["status"] == "failed" and failed["error"]["code"] == "upload_incomplete"
        await Client(publisher, "json").close()


async def test_sigterm_to_the_whole_process_group_shuts_down_as_sigterm_to_the_server_does(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """systemd's default stop, ``timeout`` and ``kill -- -PGID`` signal every process of the server at once.

    The pool workers must not die of it before the server has shut down: a worker that dies mid-job is
    replaced and the job restarted (or failed, after too many deaths) while the server is going away."""
    data_dir = tmp_path / "data"
    proc = server_process("--workers", "2", data_dir=data_dir)
    audio = make_file(tmp_path, "wav", duration_s=60.0).path
    async with aiohttp.ClientSession() as http:
        task_ids, publisher, _ = await _jobs_and_a_stream(http, proc.url, audio, 3)
        await publisher.send_bytes(clicks(1.0).tobytes())
        for _ in range(500):
            if "processing" in stored_states(data_dir).values():
                break
            await asyncio.sleep(0.02)
        assert "processing" in stored_states(data_dir).values()

        proc.signal_group(signal.SIGTERM)
        published = await receive_all(publisher)
        assert await asyncio.to_thread(proc.wait, 60.0) == 0
        assert of_type(published, "warning") == []  # no pool_restarted: no worker died under the stream
        assert any(m.get("code") == "shutdown" for m in published if m["type"] == "error"), published
        assert published[-1] == {"type": "<closed>", "code": 1001}
        proc.stop()  # joins the output reader, so every line the server wrote is in proc.output
        logged = "".join(proc.output)
        assert "died" not in logged and "restarting the job" not in logged, logged
        states = stored_states(data_dir)
        assert {states[task_id] for task_id in task_ids} <= {"pending", "success"}, states

        again = server_process("--workers", "2", data_dir=data_dir)
        finished = [await wait_finished(http, again.url, task_id, monotonic=False) for task_id in task_ids]
        assert [f["status"] for f in finished] == ["success"] * 3
        assert len({json.dumps(f["result"]["onsets"]) for f in finished}) == 1


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc's children files (threads included)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def test_a_sigkilled_server_leaves_no_process_behind(server_process: Callable[..., ServerProcess]) -> None:
    proc = server_process("--workers", "2")
    assert proc.proc is not None
    helpers = _descendants(proc.proc.pid)
    assert len(helpers) >= 3  # the forkserver and two workers at least
    proc.signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + WAIT_S
    left = helpers
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in helpers if running(pid)]
    assert left == [], f"still running after the server was killed: {left}"
