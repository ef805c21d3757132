"""The periodic sweep over live streams: status events while audio flows, and the idle timeout."""

from __future__ import annotations

import asyncio
import time

from server.protocol.errors import CloseCode, ProtocolError
from server.stream.registry import StreamRegistry
from server.stream.session import State

# Each interval is swept in this many slices, a stream being visited in one of them: hundreds of streams
# then send their status spread over the interval, not in one burst that delays their onsets.
SLICES = 10


async def sweep_streams(registry: StreamRegistry, status_interval_s: float, idle_timeout_s: float) -> None:
    """Every ``status_interval_s``: a status event from each stream that received or analysed audio since
    its last one, and a fatal ``idle_timeout`` for a running stream silent for ``idle_timeout_s``."""
    slice_s = status_interval_s / SLICES
    tick = 0
    while True:
        await asyncio.sleep(slice_s)
        tick = (tick + 1) % SLICES
        now_s = time.monotonic()
        for session in registry:
            if hash(session.stream_id) % SLICES != tick:
                continue
            session.emit_status()
            idle_s = now_s - session.last_activity_s
            if idle_timeout_s > 0 and idle_s > idle_timeout_s and session.state is State.RUNNING:
                session.fault(ProtocolError(
                    "idle_timeout", f"no message for {idle_s:.1f} s (the limit is {idle_timeout_s:g} s); "
                    "send audio or any control message to keep a stream open", CloseCode.POLICY))
