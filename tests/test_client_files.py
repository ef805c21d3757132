"""The asyncio client's file analysis against a real server: HTTP upload + polling, WebSocket upload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from server.client import ClientError, TransientClient, files
from server.dsp import DetectorSettings, detect_onsets
from testkit import signals
from tests.conftest import StartServer

TOLERANCE_S = 0.001
LONG_POLL_S = 20.0  # a poll interval far longer than the analysis


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def write_drums(tmp_path: Path, name: str = "drums.wav", seconds: float = 3.0) -> tuple[Path, np.ndarray]:
    signal = signals.drums(sr=44100, duration_s=seconds, seed=13)
    path = tmp_path / name
    sf.write(path, signal.samples, 44100, subtype="FLOAT")  # float WAV: the server decodes these samples
    return path, signal.samples


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_http_and_websocket_analysis_give_the_same_result(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path, codec: str
) -> None:
    server = await start_server()
    path, samples = write_drums(tmp_path)
    settings = {"threshold": 1.2}
    progress: list[float] = []
    async with TransientClient(base_url(server), session=http, codec=codec) as client:
        over_http = await client.analyse(path, settings, on_progress=progress.append)
        over_ws = await client.upload(path, settings)
    assert over_http == over_ws
    assert progress and progress[-1] == 1.0 and all(0.0 <= p <= 1.0 for p in progress)
    assert over_http["sample_rate"] == 44100 and over_http["channels"] == 1
    assert over_http["duration"] == pytest.approx(len(samples) / 44100)
    expected = DetectorSettings.from_mapping(settings)
    assert over_http["settings"] == expected.to_dict()
    want = [o.time for o in detect_onsets(samples, 44100, expected)]
    got = [o["time"] for o in over_http["onsets"]]
    assert len(want) >= 4 and len(got) == len(want)
    assert np.max(np.abs(np.array(got) - np.array(want))) <= TOLERANCE_S


async def test_analysis_errors_raise_client_errors(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    path, _ = write_drums(tmp_path, seconds=1.0)
    text = tmp_path / "notes.txt"
    text.write_text("these are not the samples you are looking for\n" * 50)
    async with TransientClient(base_url(server), session=http) as client:
        with pytest.raises(ClientError) as info:
            await client.analyse(path, {"threshold": "high"})
        assert (info.value.code, info.value.status) == ("bad_settings", 400)
        with pytest.raises(ClientError) as info:
            await client.upload(path, {"threshold": "high"})
        assert info.value.code == "bad_settings" and info.value.close_code is not None
        for analyse in (client.analyse, client.upload):
            with pytest.raises(ClientError) as info:
                await analyse(text)
            assert info.value.code == "not_audio", info.value


async def test_polling_gets_the_result_once_stored_not_a_poll_interval_later(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server()
    path, _ = write_drums(tmp_path)
    data = path.read_bytes()
    # A WebSocket upload not ended yet holds its task pending while the client starts polling it.
    async with http.ws_connect(server.make_url("/api/v3/upload")) as ws:
        await ws.send_json({"type": "upload", "filename": "drums.wav", "size": len(data)})
        task_id = (await ws.receive_json(timeout=30))["task_id"]
        started = time.monotonic()
        waiting = asyncio.ensure_future(
            files.wait_for_result(http, base_url(server), task_id, poll_interval_s=LONG_POLL_S))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await ws.send_bytes(data)
        await ws.send_json({"type": "end"})
        while (message := await ws.receive_json(timeout=60))["type"] != "result":
            pass
        result = await asyncio.wait_for(waiting, 2 * LONG_POLL_S)
    assert result == message["result"]
    assert time.monotonic() - started < LONG_POLL_S  # the waiting GET answered, not the next poll
