"""Closing a connection whose client is still sending, without the kernel resetting it.

Closing a TCP socket that has unread data, or that receives data afterwards, makes the kernel answer with
a reset (RST), and a reset makes the client's kernel drop what it had not read yet: the last messages the
server sent (an error, a close frame) are lost and the client sees the connection fail (WebSocket 1006).
That happens when the server refuses a message from its header while the client is still sending the
message's payload.

:class:`Drain` takes over such a connection once the server has sent its last bytes: it reads and throws
away whatever still arrives, and the socket is closed once the client hangs up, has sent nothing for
``quiet_s`` (it has finished and waits for the server to close), or after ``limit_s`` in all.
"""

from __future__ import annotations

import asyncio
import contextlib

QUIET_S = 0.5  # a client that sent nothing for this long has finished sending
LIMIT_S = 5.0  # the longest a connection lingers


class Drain(asyncio.Protocol):
    """A connection's protocol while it lingers: incoming bytes are discarded; the rest goes to ``inner``."""

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self._loop = asyncio.get_running_loop()
        self.received_at_s = self._loop.time()
        self.ended: asyncio.Future[None] = self._loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.received_at_s = self._loop.time()

    def eof_received(self) -> bool | None:
        self._end()
        return None  # the transport closes: the client has hung up

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self.inner.connection_lost(exc)  # the server's own clean-up of the connection

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    async def wait(self, quiet_s: float = QUIET_S, limit_s: float = LIMIT_S) -> None:
        """Until the client hung up, was quiet for ``quiet_s``, or ``limit_s`` passed."""
        deadline_s = self._loop.time() + limit_s
        while not self.ended.done():
            now_s = self._loop.time()
            wake_s = min(deadline_s, self.received_at_s + quiet_s)
            if wake_s <= now_s:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.ended), wake_s - now_s)


def start(transport: asyncio.Transport) -> Drain:
    """Make ``transport`` discard what it receives from now on; ``await drain.wait()``, then close it."""
    drain = Drain(transport.get_protocol())
    transport.set_protocol(drain)
    return drain
