"""The message queue of a publisher's WebSocket, which hands its binary audio messages over at once.

aiohttp's frame reader puts every message in the socket's queue and wakes the task waiting in
``receive()``; for a stream of 20 ms audio chunks that is a future, a task step and three coroutine
frames per chunk. :class:`AudioTap` is that queue with a tap: while a tap is set and no message waits in
the queue, a binary message goes straight to the tap, from the reader's own call, and the receive task
sleeps on. Anything else (text, control frames, a binary message behind a waiting one) is queued as
usual, so the publisher still sees its messages in the order they came: a message that waits holds back
the audio behind it until the receive task has taken it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue

BINARY = WSMsgType.BINARY
AudioHandler = Callable[[bytes], bool]  # takes one binary message; False: queue it instead, from now on


class AudioTap(WebSocketDataQueue):
    """aiohttp's WebSocket message queue with a tap for binary messages (:attr:`tap`, none at first)."""

    def __init__(self, protocol: Any, limit: int, *, loop: Any) -> None:
        super().__init__(protocol, limit, loop=loop)
        self.tap: AudioHandler | None = None

    def feed_data(self, data: Any, size: int) -> None:
        tap = self.tap
        if tap is not None and data[0] is BINARY and not self._buffer:
            if tap(data[1]):
                return
            self.tap = None  # the tap declined: this message and every later one go through the queue
        super().feed_data(data, size)
