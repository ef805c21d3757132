"""The live streams of this process, with the limits on how many there may be."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator

from server.protocol.errors import CloseCode, ProtocolError
from server.stream.session import StreamSession

STREAM_ID_BYTES = 12  # 96 random bits: ids cannot be guessed


class StreamRegistry:
    """Sessions by id; refuses a new one beyond ``max_streams`` in all or ``max_per_client`` per client."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._sessions: dict[str, StreamSession] = {}
        self._per_client: Counter[str] = Counter()
        # Observers (metrics, logs): called with each session as it is added and as it is removed.
        self.on_add: list[Callable[[StreamSession], None]] = []
        self.on_remove: list[Callable[[StreamSession], None]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[StreamSession]:
        return iter(list(self._sessions.values()))

    def get(self, stream_id: str) -> StreamSession | None:
        return self._sessions.get(stream_id)

    def new_id(self) -> str:
        """A fresh unguessable URL-safe id; never starts with ``-``, which command lines read as an option."""
        while True:
            stream_id = secrets.token_urlsafe(STREAM_ID_BYTES)
            if not stream_id.startswith("-") and stream_id not in self._sessions:
                return stream_id

    def check_room(self, client: str) -> None:
        """Raise a fatal :class:`ProtocolError` if one more stream from ``client`` is not allowed."""
        if len(self._sessions) >= self.max_streams:
            raise ProtocolError("server_full", f"the server already runs {self.max_streams} streams, its "
                                "maximum; retry later", CloseCode.TRY_AGAIN_LATER)
        if self._per_client[client] >= self.max_per_client:
            raise ProtocolError("client_stream_limit", f"this client already runs {self.max_per_client} "
                                "streams, the most one client may", CloseCode.POLICY)

    def add(self, session: StreamSession) -> None:
        self.check_room(session.client)
        self._sessions[session.stream_id] = session
        self._per_client[session.client] += 1
        for observer in self.on_add:
            observer(session)

    def remove(self, session: StreamSession) -> None:
        if self._sessions.pop(session.stream_id, None) is not None:
            self._per_client[session.client] -= 1
            if self._per_client[session.client] <= 0:
                del self._per_client[session.client]
            for observer in self.on_remove:
                observer(session)
