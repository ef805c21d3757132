"""No room on the disk for an upload: 507 (HTTP) or ``insufficient_storage`` + 1013 (WebSocket), nothing kept,
and the server goes on. The room runs out for real: the server process gets a file-size limit (RLIMIT_FSIZE),
so its writes fail with EFBIG as they would with ENOSPC on a full disk."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.analysis_files import make_file, matches, post_file, wait_finished
from tests.conftest import ServerProcess, run_async

ROOM_BYTES = 256 * 1024  # the most the server may write into one file while "full"


async def upload_over_websocket(http: aiohttp.ClientSession, base: str,
                                data: bytes) -> list[dict[str, object]]:
    """Every message of a WebSocket upload of ``data``, up to the ``<closed>`` marker (with its code)."""
    messages: list[dict[str, object]] = []
    async with http.ws_connect(base.replace("http", "ws", 1) + "/api/v3/upload") as ws:
        await ws.send_str(json.dumps({"type": "upload", "filename": "big.wav", "size": len(data)}))
        messages.append(json.loads((await ws.receive(timeout=60)).data))
        try:
            for start in range(0, len(data), 256 * 1024):
                await ws.send_bytes(data[start:start + 256 * 1024])
            await ws.send_str(json.dumps({"type": "end"}))
        except ConnectionError:
            pass  # the server may have closed already
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                messages.append(json.loads(message.data))
        messages.append({"type": "<closed>", "code": ws.close_code})
    return messages


def test_a_full_disk_refuses_the_upload_keeps_nothing_and_the_server_goes_on(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    proc = server_process("--workers", "1", data_dir=data_dir)
    assert proc.proc is not None
    big = make_file(tmp_path, "wav", duration_s=30.0).path.read_bytes()  # about 5 MB
    small = make_file(tmp_path, "wav", duration_s=3.0, seed=1)
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            # The soft limit only: it can be raised again (up to the hard one) once the "disk" has room.
            resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (ROOM_BYTES, unlimited[1]))
            try:
                status, body = await post_file(http, proc.url, big, filename="big.wav")
                assert status == 507, body
                assert body["error"]["code"] == "insufficient_storage", body
                messages = await upload_over_websocket(http, proc.url, big)
            finally:
                resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, unlimited)
            accepted, error, closed = messages[0], messages[-2], messages[-1]
            assert accepted["type"] == "accepted", messages
            assert error["type"] == "error" and error["code"] == "insufficient_storage", messages
            assert closed == {"type": "<closed>", "code": 1013}
            async with http.get(f"{proc.url}/api/v3/analysis/{accepted['task_id']}") as resp:
                task = await resp.json()
            assert task["status"] == "failed" and task["error"]["code"] == "upload_incomplete", task
            assert list((data_dir / "uploads").iterdir()) == []  # nothing that arrived was kept

            status, body = await post_file(http, proc.url, small.path, filename="small.wav")  # room again
            assert status == 202, body
            done = await wait_finished(http, proc.url, body["task_id"])
            assert done["status"] == "success", done
            found = [onset["time"] for onset in done["result"]["onsets"]]
            assert matches(found, small.onsets_s) >= 0.9

    run_async(scenario())
    assert not [line for line in proc.output if "Traceback" in line], list(proc.output)[-20:]
