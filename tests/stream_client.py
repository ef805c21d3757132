"""A small publisher/subscriber client over real aiohttp WebSockets, for the live-stream tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgpack
import numpy as np
from aiohttp.test_utils import TestServer

RECEIVE_TIMEOUT_S = 30.0  # generous: the suite may run on a loaded 2-core machine
CHUNK_S = 0.02


def closed_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return {"type": "<closed>", "code": ws.close_code}


class Client:
    """One WebSocket to the server in either codec; messages come back as dicts."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, codec: str) -> None:
        self.ws = ws
        self.codec = codec

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, server: TestServer, path: str,
                      codec: str = "json") -> Client:
        query = "" if codec == "json" else f"?codec={codec}"
        ws = await http.ws_connect(server.make_url(path + query), autoping=True)
        return cls(ws, codec)

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.codec == "json":
            await self.ws.send_str(json.dumps(message))
        else:
            await self.ws.send_bytes(msgpack.packb(dict(message), use_bin_type=True))

    async def send_audio(self, samples: np.ndarray, encoding: str = "pcm_f32le") -> None:
        dtype = "<f4" if encoding == "pcm_f32le" else "<i2"
        data = np.ascontiguousarray(samples, dtype=dtype).tobytes()
        if self.codec == "json":
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_bytes(msgpack.packb({"type": "audio", "data": data}, use_bin_type=True))

    async def receive(self, timeout_s: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
        """The next message, or ``{"type": "<closed>", "code": close code}`` once the socket closed."""
        message = await self.ws.receive(timeout=timeout_s)
        if message.type == aiohttp.WSMsgType.TEXT:
            assert self.codec == "json", "a text frame under codec=msgpack"
            decoded: dict[str, Any] = json.loads(message.data)
            return decoded
        if message.type == aiohttp.WSMsgType.BINARY:
            assert self.codec == "msgpack", "a binary frame from the server under codec=json"
            unpacked: dict[str, Any] = msgpack.unpackb(message.data, raw=False)
            return unpacked
        return closed_message(self.ws)

    async def receive_until(self, kind: str, timeout_s: float = RECEIVE_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every message up to and including the first of type ``kind`` (or the close)."""
        out: list[dict[str, Any]] = []
        while True:
            message = await self.receive(timeout_s)
            out.append(message)
            if message["type"] in (kind, "<closed>"):
                return out

    async def receive_all(self, timeout_s: float = RECEIVE_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every message until the socket closes; the last one is the ``<closed>`` marker."""
        return await self.receive_until("<closed>", timeout_s)

    async def close(self) -> None:
        await self.ws.close()


class Publisher(Client):
    """A client of ``/api/v3/stream``."""

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, server: TestServer, codec: str = "json") -> Publisher:
        client = await Client.connect(http, server, "/api/v3/stream", codec)
        return cls(client.ws, codec)

    async def start(self, sample_rate: int, channels: int = 1, encoding: str = "pcm_f32le",
                    settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "start", "sample_rate": sample_rate, "channels": channels,
                                   "encoding": encoding}
        if settings is not None:
            message["settings"] = dict(settings)
        await self.send(message)
        reply = await self.receive()
        assert reply["type"] == "started", reply
        return reply

    async def stream(self, samples: np.ndarray, sample_rate: int, chunk_s: float = CHUNK_S,
                     encoding: str = "pcm_f32le", pace: float = 0.0) -> None:
        """Send ``samples`` in chunks; ``pace`` > 0 sleeps that fraction of each chunk's duration."""
        step = max(1, round(chunk_s * sample_rate))
        for i in range(0, len(samples), step):
            await self.send_audio(samples[i:i + step], encoding)
            await asyncio.sleep(pace * chunk_s)

    async def stop(self) -> list[dict[str, Any]]:
        """Send ``stop``; every message up to the close (``stopped`` then the ``<closed>`` marker)."""
        await self.send({"type": "stop"})
        return await self.receive_all()


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == kind]


def onset_times(messages: list[dict[str, Any]]) -> list[float]:
    return [m["time"] for m in of_type(messages, "onset")]


async def listed_streams(http: aiohttp.ClientSession, server: TestServer) -> list[dict[str, Any]]:
    async with http.get(server.make_url("/api/v3/streams")) as resp:
        assert resp.status == 200
        streams: list[dict[str, Any]] = (await resp.json())["streams"]
        return streams


async def until_listed(http: aiohttp.ClientSession, server: TestServer, count: int,
                       timeout_s: float = RECEIVE_TIMEOUT_S) -> list[dict[str, Any]]:
    """Poll ``GET /api/v3/streams`` until it lists ``count`` streams; the listing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        streams = await listed_streams(http, server)
        if len(streams) == count or loop.time() > deadline:
            assert len(streams) == count, streams
            return streams
        await asyncio.sleep(0.02)
