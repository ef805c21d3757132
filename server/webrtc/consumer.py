"""Consuming a received audio track into a stream session, on the RTP clock.

:class:`FrameConverter` turns each decoded frame into mono float32 blocks at the session's rate, with
silence where the RTP clock says audio is missing (:mod:`server.webrtc.timeline`).
:func:`consume_track` reads the track until it ends, whatever happens to the session: aiortc queues
decoded frames without bound, so a track nobody reads grows the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.stream.session import State, StreamSession
from server.webrtc.audio import F32, MonoResampler, frame_to_mono, silence
from server.webrtc.timeline import MAX_GAP_S, RtpTimeline

log = logging.getLogger(__name__)

FILL_CHUNK_S = 0.5  # inserted silence goes to the session in pieces of at most this
ROOM_POLL_S = 0.01  # how often a long fill checks whether the session has caught up


class FrameConverter:
    """Decoded frames of one track → mono float32 blocks at ``out_rate_hz``, placed by RTP time."""

    def __init__(self, out_rate_hz: int, max_gap_s: float = MAX_GAP_S,
                 on_jump: Callable[[float, float], None] | None = None) -> None:
        """``on_jump(at_s, jump_s)`` hears of each clock discontinuity: RTP time ``jump_s`` seconds ahead
        of the time line's end ``at_s`` (seconds), which the time line skips instead of filling."""
        self.out_rate_hz = out_rate_hz
        self.on_jump = on_jump
        self.max_gap_s = max_gap_s
        self.timeline: RtpTimeline | None = None
        self._resampler: MonoResampler | None = None
        self.jumps_s = 0.0  # RTP time dropped at clock discontinuities

    def convert(self, frame: av.AudioFrame) -> Iterator[tuple[F32, bool]]:
        """Blocks ``(samples, is_silence)`` to append for ``frame``, in order (inserted silence first)."""
        rate = int(frame.sample_rate)
        timeline, resampler = self.timeline, self._resampler
        pending: F32 | None = None
        if timeline is None or resampler is None or timeline.sample_rate_hz != rate:
            # First frame, or the codec's rate changed: a new time line continuing where the last ended.
            pending = resampler.flush() if resampler is not None else None
            timeline = self.timeline = RtpTimeline(rate, self.max_gap_s)
            resampler = self._resampler = MonoResampler(rate, self.out_rate_hz)
        if pending is not None and len(pending):
            yield pending, False
        samples = int(frame.samples)
        if frame.pts is None or frame.time_base is None:
            placement = timeline.append(samples)
        else:
            placement = timeline.place(int(frame.pts), Fraction(frame.time_base), samples)
        if placement.jump_s:
            self.jumps_s += placement.jump_s
            if self.on_jump is not None:
                self.on_jump((timeline.end - samples) / rate, placement.jump_s)
        chunk = max(1, round(FILL_CHUNK_S * rate))
        left = placement.silence
        while left > 0:
            n = min(chunk, left)
            left -= n
            out = resampler.push(silence(n))
            if len(out):
                yield out, True
        skip = placement.skip
        if skip >= samples:
            return
        mono = frame_to_mono(frame)
        out = resampler.push(mono[skip:] if skip else mono)
        if len(out):
            yield out, False


async def wait_for_room(session: StreamSession, max_lag_s: float) -> None:
    """Wait while the session has more than ``max_lag_s`` of received audio not yet analysed."""
    while session.state is State.RUNNING and session.received_s - session.analysed_s > max_lag_s:
        await asyncio.sleep(ROOM_POLL_S)


async def consume_track(track: MediaStreamTrack, session: StreamSession, converter: FrameConverter, *,
                        max_lag_s: float) -> None:
    """Feed ``track``'s audio to ``session`` until the track ends.

    Once the session stops running, frames are still read (and dropped) until the track ends. Long
    inserted silences wait for the session to analyse its backlog first (``max_lag_s``), so filling a
    gap never overflows the session's ring buffer.
    """
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if session.state is not State.RUNNING or not isinstance(frame, av.AudioFrame):
            continue
        for block, is_silence in converter.convert(frame):
            if is_silence:
                await wait_for_room(session, max_lag_s)
                if session.state is not State.RUNNING:
                    break
            session.feed(block.reshape(-1, 1))

