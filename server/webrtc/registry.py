"""The WebRTC peers of this process: each from its offer until its peer connection is closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from server.webrtc.peer import WebRtcPeer

CLOSE_ALL_TIMEOUT_S = 10.0


class PeerRegistry:
    """Every live :class:`WebRtcPeer`, negotiating or streaming; empty once all are closed."""

    def __init__(self) -> None:
        self._peers: set[WebRtcPeer] = set()

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[WebRtcPeer]:
        return iter(list(self._peers))

    def add(self, peer: WebRtcPeer) -> None:
        self._peers.add(peer)

    def remove(self, peer: WebRtcPeer) -> None:
        self._peers.discard(peer)

    async def close_all(self) -> None:
        """Close every peer connection now (server shutdown); streams are abandoned, not analysed."""
        peers = list(self._peers)
        if peers:
            await asyncio.wait([asyncio.create_task(peer.close("shutdown")) for peer in peers],
                               timeout=CLOSE_ALL_TIMEOUT_S)
        self._peers.clear()
