"""``GET /api/v3/upload``: a file over a WebSocket, in both codecs, with flow control and every error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from server.dsp import detect_onsets
from tests.analysis_files import decode_whole, get_task, make_file, times_and_strengths, wait_finished
from tests.conftest import StartServer

TIMEOUT_S = 60.0
Message = dict[str, Any]


class UploadClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, codec: str) -> None:
        self.ws = ws
        self.codec = codec

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, server: TestServer, codec: str = "json",
                      max_msg_size: int = 64 << 20) -> UploadClient:
        query = "" if codec == "json" else f"?codec={codec}"
        ws = await http.ws_connect(server.make_url("/api/v3/upload" + query), max_msg_size=max_msg_size)
        return cls(ws, codec)

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.codec == "json":
            await self.ws.send_str(json.dumps(message))
        else:
            await self.ws.send_bytes(msgpack.packb(message, use_bin_type=True))

    async def send_data(self, data: bytes) -> None:
        if self.codec == "json":
            await self.ws.send_bytes(data)
        else:
            await self.send({"type": "audio", "data": data})

    async def receive(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=TIMEOUT_S)
        if message.type is WSMsgType.TEXT:
            return dict(json.loads(message.data))
        if message.type is WSMsgType.BINARY:
            return dict(msgpack.unpackb(message.data, raw=False))
        return {"type": "<closed>", "code": self.ws.close_code}

    async def until_closed(self) -> list[dict[str, Any]]:
        messages = []
        while True:
            message = await self.receive()
            messages.append(message)
            if message["type"] == "<closed>":
                return messages

    async def upload(self, data: bytes, *, chunk_bytes: int = 256 << 10,
                     settings: Mapping[str, Any] | None = None) -> tuple[Message, list[Message]]:
        """Send the whole file respecting the window; returns ``accepted`` and the acks seen while sending."""
        start: dict[str, Any] = {"type": "upload", "filename": "song.bin", "size": len(data)}
        if settings is not None:
            start["settings"] = settings
        await self.send(start)
        accepted = await self.receive()
        assert accepted["type"] == "accepted", accepted
        window = accepted["window_bytes"]
        chunk_bytes = min(chunk_bytes, accepted["max_message_bytes"])
        acked, sent = 0, 0
        acks = []
        while sent < len(data):
            while sent - acked >= window:
                ack = await self.receive()
                assert ack["type"] == "ack", ack
                assert ack["received"] >= acked
                acked = ack["received"]
                acks.append(ack)
            chunk = data[sent : sent + chunk_bytes]
            await self.send_data(chunk)
            sent += len(chunk)
        await self.send({"type": "end"})
        return accepted, acks


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_upload_then_progress_then_result(codec: str, server: TestServer, http: aiohttp.ClientSession,
                                                tmp_path: Path) -> None:
    made = make_file(tmp_path, "flac", duration_s=40.0, seed=5)
    data = made.path.read_bytes()
    client = await UploadClient.connect(http, server, codec)
    accepted, _ = await client.upload(data, chunk_bytes=100_000)
    rest = await client.until_closed()
    assert rest[-1] == {"type": "<closed>", "code": 1000}
    result_message = rest[-2]
    assert result_message["type"] == "result" and result_message["task_id"] == accepted["task_id"]
    kinds = [m["type"] for m in rest[:-2]]
    assert set(kinds) <= {"ack", "progress"}
    final_ack = [m for m in rest if m["type"] == "ack"][-1]
    assert final_ack["received"] == len(data)
    progress = [m["progress"] for m in rest if m["type"] == "progress"]
    assert progress and progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    assert all(m["task_id"] == accepted["task_id"] for m in rest if m["type"] == "progress")

    samples, rate = decode_whole(made.path)
    result = result_message["result"]
    expected = [{"time": o.time, "strength": o.strength} for o in detect_onsets(samples, rate)]
    assert times_and_strengths(result["onsets"]) == expected
    assert result["duration"] == pytest.approx(40.0)
    # the same task over HTTP
    status, task = await get_task(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert status == 200 and task["status"] == "success" and task["result"] == result


async def test_acks_keep_a_fast_client_within_the_window(server: TestServer, http: aiohttp.ClientSession,
                                                         tmp_path: Path) -> None:
    data = make_file(tmp_path, "wav", duration_s=60.0, seed=1).path.read_bytes()  # ~10 MB
    client = await UploadClient.connect(http, server)
    accepted, acks = await client.upload(data, chunk_bytes=512 << 10)
    assert len(data) > 2 * accepted["window_bytes"]
    assert acks  # the client had to wait for acknowledgements
    assert [a["received"] for a in acks] == sorted(a["received"] for a in acks)
    rest = await client.until_closed()
    assert rest[-2]["type"] == "result"


async def test_analysis_failure_is_an_error_with_the_task_id(server: TestServer, http: aiohttp.ClientSession
                                                             ) -> None:
    client = await UploadClient.connect(http, server)
    accepted, _ = await client.upload(b"not audio at all " * 100)
    rest = await client.until_closed()
    assert rest[-2] == {"type": "error", "task_id": accepted["task_id"], "code": "not_audio",
                        "message": rest[-2]["message"]}
    assert rest[-1]["code"] == 1000


# --- protocol errors: documented code and close code; the server keeps serving ----------------------


async def refused(client: UploadClient) -> tuple[dict[str, Any], int | None]:
    messages = await client.until_closed()
    errors = [m for m in messages if m["type"] == "error"]
    assert errors, messages
    return errors[-1], messages[-1]["code"]


async def test_data_before_upload_is_refused(server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await UploadClient.connect(http, server)
    await client.send_data(b"RIFF")
    error, code = await refused(client)
    assert (error["code"], code) == ("not_started", 1008)


async def test_end_before_upload_is_refused(server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await UploadClient.connect(http, server, "msgpack")
    await client.send({"type": "end"})
    error, code = await refused(client)
    assert (error["code"], code) == ("not_started", 1008)


@pytest.mark.parametrize(("message", "error_code", "close_code"), [
    ({"type": "upload", "filename": "a", "size": -1}, "bad_upload", 1007),
    ({"type": "upload", "filename": "a", "size": "10"}, "bad_upload", 1007),
    ({"type": "upload", "filename": 5, "size": 10}, "bad_upload", 1007),
    ({"type": "upload", "size": 10, "extra": 1}, "bad_message", 1007),
    ({"type": "upload", "size": 10, "settings": {"threshold": 500}}, "bad_settings", 1008),
    ({"type": "upload", "size": 10, "settings": [1]}, "bad_settings", 1008),
    ({"type": "upload", "size": 0}, "empty", 1008),
    ({"type": "upload", "size": 10 << 30}, "too_large", 1009),
    ({"type": "dance"}, "unknown_type", 1008),
])
async def test_bad_upload_message_is_refused(message: dict[str, Any], error_code: str, close_code: int,
                                             server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await UploadClient.connect(http, server)
    await client.send(message)
    error, code = await refused(client)
    assert (error["code"], code) == (error_code, close_code)
    if error_code == "bad_settings" and "500" in json.dumps(message):
        assert "threshold" in error["message"] and "500" in error["message"]


async def test_more_bytes_than_announced_fails_the_task(server: TestServer, http: aiohttp.ClientSession
                                                        ) -> None:
    client = await UploadClient.connect(http, server)
    await client.send({"type": "upload", "filename": "a.wav", "size": 10})
    accepted = await client.receive()
    await client.send_data(b"0123456789AB")
    error, code = await refused(client)
    assert (error["code"], code) == ("size_mismatch", 1008)
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert done["error"]["code"] == "upload_incomplete"


async def test_end_before_all_bytes_fails_the_task(server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await UploadClient.connect(http, server, "msgpack")
    await client.send({"type": "upload", "filename": "a.wav", "size": 100})
    accepted = await client.receive()
    await client.send_data(b"x" * 60)
    await client.send({"type": "end"})
    error, code = await refused(client)
    assert (error["code"], code) == ("size_mismatch", 1008)
    assert "60 of the announced 100" in error["message"]
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert done["status"] == "failed"


async def test_second_upload_message_is_refused(server: TestServer, http: aiohttp.ClientSession) -> None:
    client = await UploadClient.connect(http, server)
    await client.send({"type": "upload", "size": 10})
    await client.receive()
    await client.send({"type": "upload", "size": 10})
    error, code = await refused(client)
    assert (error["code"], code) == ("already_started", 1008)


async def test_oversized_message_is_explained(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(max_message_bytes=1000)
    client = await UploadClient.connect(http, server)
    await client.send({"type": "upload", "size": 5000})
    accepted = await client.receive()
    assert accepted["max_message_bytes"] == 1000
    await client.send_data(b"x" * 2000)
    error, code = await refused(client)
    assert (error["code"], code) == ("message_too_big", 1009)


async def test_message_after_end_is_refused_but_the_job_goes_on(server: TestServer,
                                                                http: aiohttp.ClientSession,
                                                                tmp_path: Path) -> None:
    data = make_file(tmp_path, "wav", duration_s=20.0).path.read_bytes()
    client = await UploadClient.connect(http, server)
    accepted, _ = await client.upload(data)
    await client.send_data(b"more")
    messages = await client.until_closed()
    assert messages[-1]["code"] in (1000, 1008)  # the result may have been sent before the extra bytes
    if messages[-1]["code"] == 1008:
        assert [m for m in messages if m["type"] == "error"][-1]["code"] == "already_ended"
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert done["status"] == "success"


async def test_disconnect_mid_upload_fails_the_task_and_deletes_the_part(server: TestServer,
                                                                        http: aiohttp.ClientSession,
                                                                        config: Any) -> None:
    client = await UploadClient.connect(http, server)
    await client.send({"type": "upload", "size": 5_000_000})
    accepted = await client.receive()
    await client.send_data(b"y" * 3_000_000)
    await client.ws.close()
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert done["error"]["code"] == "upload_incomplete"
    assert list((config.data_dir / "uploads").iterdir()) == []


async def test_idle_upload_times_out(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(idle_timeout_s=0.5)
    client = await UploadClient.connect(http, server)
    await client.send({"type": "upload", "size": 100})
    accepted = await client.receive()
    error, code = await refused(client)
    assert (error["code"], code) == ("idle_timeout", 1008)
    done = await wait_finished(http, str(server.make_url("")).rstrip("/"), accepted["task_id"])
    assert done["error"]["code"] == "upload_incomplete"


async def test_plain_http_to_the_socket_is_426(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.make_url("/api/v3/upload")) as resp:
        assert resp.status == 426
        assert (await resp.json())["error"]["code"] == "websocket_required"


async def test_many_uploads_at_once(server: TestServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    files = [make_file(tmp_path, name, duration_s=4.0, seed=seed)
             for seed, name in enumerate(["wav", "webm", "mp3", "flac", "m4a", "ogg"])]

    async def one(path: Path, codec: str) -> tuple[Path, dict[str, Any]]:
        client = await UploadClient.connect(http, server, codec)
        await client.upload(path.read_bytes(), chunk_bytes=50_000)
        return path, (await client.until_closed())[-2]

    done = await asyncio.gather(*(one(f.path, ("json", "msgpack")[i % 2]) for i, f in enumerate(files)))
    for path, message in done:
        assert message["type"] == "result"
        samples, rate = decode_whole(path)
        expected = [o.time for o in detect_onsets(samples, rate)]
        assert [o["time"] for o in message["result"]["onsets"]] == expected
