"""The asyncio client of a Transient server: live streams, subscriptions, the stream list, file analysis.

>>> async with TransientClient("http://127.0.0.1:8080", token="...") as client:
...     publisher = await client.publish(sample_rate=48000)
...     await publisher.send_audio(samples)
...     stopped = await publisher.stop()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from server.client import files
from server.client.auth import auth_headers, default_token, normalise_token
from server.client.files import Progress
from server.client.publisher import Publisher
from server.client.subscriber import Subscription

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "TRANSIENT_SERVER"


def default_server(environ: Mapping[str, str] | None = None) -> str:
    """``TRANSIENT_SERVER`` if set, else the server's default address."""
    return (os.environ if environ is None else environ).get(SERVER_ENV) or DEFAULT_SERVER


class TransientClient:
    """One server, one HTTP session (owned unless given). Use as ``async with``.

    Each live stream and subscription holds one connection of the session for its life: the session it
    makes has no cap on connections; a ``session`` given keeps its connector's (aiohttp's default: 100).

    ``token`` is presented as ``Authorization: Bearer TOKEN`` on every request and WebSocket handshake;
    ``None`` takes ``TRANSIENT_TOKEN`` from the environment, if set; ``""`` sends none. A token that cannot
    travel in a header raises :class:`ValueError`. A refused token raises :class:`ClientError` with the
    server's code (``unauthorized``, status 401; ``forbidden``, status 403) from the call that met it.
    """

    def __init__(self, base_url: str | None = None, *, session: aiohttp.ClientSession | None = None,
                 codec: str = "json", token: str | None = None) -> None:
        self.base_url = (base_url or default_server()).rstrip("/")
        self.codec = codec
        self.token = default_token() if token is None else normalise_token(token)
        self._session = session
        self._owns_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No cap on connections: each live stream and subscription holds one for its life, and aiohttp's
            # default connector (100) made the next publish wait for a free one forever. The server's own
            # limits (max_streams_per_client, ...) refuse what is too much, with an error.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TransientClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def streams(self) -> list[dict[str, Any]]:
        """``GET /api/v3/streams``: the live streams."""
        async with self.session.get(self.base_url + "/api/v3/streams",
                                    headers=auth_headers(self.token)) as response:
            body = await files.json_or_error(response)
        streams: list[dict[str, Any]] = body["streams"]
        return streams

    async def publish(self, sample_rate: int, channels: int = 1, encoding: str = "pcm_f32le",
                      settings: Mapping[str, Any] | None = None, *, flow_control: bool = False) -> Publisher:
        """Start a live stream (``flow_control``: see :meth:`Publisher.open`)."""
        return await Publisher.open(self.session, self.base_url, sample_rate=sample_rate, channels=channels,
                                    encoding=encoding, settings=settings, codec=self.codec, token=self.token,
                                    flow_control=flow_control)

    async def subscribe(self, stream_id: str) -> Subscription:
        """Follow a live stream's events."""
        return await Subscription.open(self.session, self.base_url, stream_id, self.codec, token=self.token)

    async def analyse(self, path: Path, settings: Mapping[str, Any] | None = None, *,
                      on_progress: Progress | None = None) -> dict[str, Any]:
        """Analyse a file through ``POST /api/v3/analysis`` and polling; the result object."""
        return await files.analyse_http(self.session, self.base_url, path, settings, on_progress=on_progress,
                                        token=self.token)

    async def upload(self, path: Path, settings: Mapping[str, Any] | None = None, *,
                     on_progress: Progress | None = None) -> dict[str, Any]:
        """Analyse a file through the ``/api/v3/upload`` WebSocket; the result object."""
        return await files.analyse_ws(self.session, self.base_url, path, settings, on_progress=on_progress,
                                      codec=self.codec, token=self.token)
