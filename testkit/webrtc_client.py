"""A real aiortc WebRTC publisher for the tests and the latency bench.

:class:`ArrayTrack` plays a float signal as a microphone would: 20 ms frames paced in real time, silence
after the signal ends, optional gaps in its time stamps (what lost packets or discontinuous transmission
look like to the receiver). :class:`WebRtcClient` offers that track with an ``events`` data channel to
``POST /api/v3/webrtc/offer`` and collects the channel's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import is_rtcp

RECEIVE_TIMEOUT_S = 30.0
FRAME_SAMPLES = 960  # 20 ms at 48 kHz, as browsers send Opus


class ArrayTrack(MediaStreamTrack):
    """``samples`` (mono ``(n,)`` or stereo ``(n, 2)`` float32 at ``sample_rate_hz``) as a live track.

    ``gaps_s`` lists ``(start_s, duration_s)`` spans whose frames are never sent: the next frame's time
    stamp jumps over them. ``sent_at`` maps each sent frame's first sample index to the monotonic time it
    was handed to the encoder. :meth:`pause` stops producing frames (the track stays live), :meth:`resume`
    goes on; a track made ``paused`` sends nothing until resumed.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray, sample_rate_hz: int = 48000, *,
                 gaps_s: Sequence[tuple[float, float]] = (), realtime: bool = True,
                 frame_samples: int = FRAME_SAMPLES, paused: bool = False) -> None:
        super().__init__()
        stereo = samples if samples.ndim == 2 else np.stack([samples, samples], axis=1)
        self.pcm = np.clip(np.round(stereo * 32767.0), -32768, 32767).astype(np.int16)
        self.sample_rate_hz = sample_rate_hz
        self.frame_samples = frame_samples
        self.realtime = realtime
        self.gaps = [(round(a * sample_rate_hz), round((a + d) * sample_rate_hz)) for a, d in gaps_s]
        self.position = 0
        self.sent_at: dict[int, float] = {}
        self._start_s: float | None = None
        self._running = asyncio.Event()
        if not paused:
            self._running.set()

    @property
    def finished(self) -> bool:
        """Every sample of the signal has been sent."""
        return self.position >= len(self.pcm)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        """Start (or go on) producing frames; the time line goes on from where it stopped."""
        self._running.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._running.wait()
        n = self.frame_samples
        for start, stop in self.gaps:
            if start <= self.position < stop:
                self.position = start + -(-(stop - start) // n) * n  # skip whole frames
        pts = self.position
        if self._start_s is None:
            self._start_s = time.monotonic()
        elif self.realtime:
            delay = self._start_s + pts / self.sample_rate_hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        block = self.pcm[pts:pts + n]
        if len(block) < n:
            block = np.concatenate([block, np.zeros((n - len(block), 2), np.int16)])
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = self.sample_rate_hz
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, self.sample_rate_hz)
        self.position = pts + n
        self.sent_at[pts] = time.monotonic()
        return frame


class WebRtcClient:
    """One peer connection to the server with an ``events`` data channel; messages come back as dicts."""

    def __init__(self, pc: RTCPeerConnection, channel: RTCDataChannel | None) -> None:
        self.pc = pc
        self.channel = channel
        self.answer: dict[str, Any] = {}
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received_at: list[tuple[float, dict[str, Any]]] = []
        self.opened = asyncio.Event()
        if channel is not None:
            channel.on("open", self.opened.set)
            channel.on("message", self._on_message)
            channel.on("close", lambda: self.messages.put_nowait({"type": "<closed>"}))

    @classmethod
    def offerer(cls, track: MediaStreamTrack | None, *, data_channel: bool = True,
                codec: str | None = None) -> WebRtcClient:
        """A client ready to offer ``track`` (ICE on host candidates only, no STUN server)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = pc.createDataChannel("events") if data_channel else None
        if track is not None:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if codec is not None:
                from aiortc import RTCRtpSender

                capabilities = RTCRtpSender.getCapabilities("audio")
                assert capabilities is not None
                transceiver.setCodecPreferences(
                    [c for c in capabilities.codecs if c.mimeType.lower() == f"audio/{codec}"])
        return cls(pc, channel)

    def drop_rtp(self, packets: Collection[int]) -> None:
        """Never send the RTP packets whose 1-based index (in sending order) is in ``packets``: a lossy
        network between this client and the server (their sequence numbers are used up, as when lost)."""
        transport = self.pc.getTransceivers()[0].sender.transport
        send = transport._send_rtp
        sent = 0

        async def lossy_send(data: bytes) -> None:
            nonlocal sent
            if not is_rtcp(data):
                sent += 1
                if sent in packets:
                    return
            await send(data)

        transport._send_rtp = lossy_send  # type: ignore[method-assign]

    async def offer_sdp(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        return self.pc.localDescription.sdp

    async def post_offer(self, http: aiohttp.ClientSession, base_url: str,
                         settings: Mapping[str, Any] | None = None) -> aiohttp.ClientResponse:
        body: dict[str, Any] = {"sdp": await self.offer_sdp(), "type": "offer"}
        if settings is not None:
            body["settings"] = dict(settings)
        return await http.post(f"{base_url}/api/v3/webrtc/offer", json=body)

    async def connect(self, http: aiohttp.ClientSession, base_url: str,
                      settings: Mapping[str, Any] | None = None, *, wait_open: bool = True) -> WebRtcClient:
        """Offer, apply the answer, and (by default) wait for the data channel to open."""
        response = await self.post_offer(http, base_url, settings)
        body = await response.json()
        assert response.status == 200, body
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        if wait_open and self.channel is not None:
            await asyncio.wait_for(self.opened.wait(), RECEIVE_TIMEOUT_S)
        return self

    @property
    def stream_id(self) -> str:
        return str(self.answer.get("stream_id", ""))

    def _on_message(self, data: str | bytes) -> None:
        message = json.loads(data) if isinstance(data, str) else {"type": "<binary>", "data": data}
        self.received_at.append((time.monotonic(), message))
        self.messages.put_nowait(message)

    def send(self, message: Mapping[str, Any] | str | bytes) -> None:
        assert self.channel is not None
        self.channel.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def receive(self, timeout_s: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
        """The next message, or ``{"type": "<closed>"}`` once the channel closed."""
        return await asyncio.wait_for(self.messages.get(), timeout_s)

    async def receive_until(self, kind: str, timeout_s: float = RECEIVE_TIMEOUT_S) -> list[dict[str, Any]]:
        """Messages up to and including the first of type ``kind`` (or the channel's close)."""
        out: list[dict[str, Any]] = []
        while True:
            message = await self.receive(timeout_s)
            out.append(message)
            if message["type"] in (kind, "<closed>"):
                return out

    async def wait_state(self, *states: str, timeout_s: float = RECEIVE_TIMEOUT_S) -> str:
        """Wait until the connection state is one of ``states``."""
        deadline = time.monotonic() + timeout_s
        while self.pc.connectionState not in states:
            if time.monotonic() > deadline:
                raise TimeoutError(f"connection state stayed {self.pc.connectionState!r}")
            await asyncio.sleep(0.02)
        return str(self.pc.connectionState)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()
