"""Real-time pacing of audio sent from a file or a pipe: never ahead of the clock."""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Sleeps so that ``frames`` sent so far never run ahead of wall time (``speed`` × real time).

    The schedule is absolute (from the first call), so sleeping late never accumulates drift.
    """

    def __init__(self, sample_rate: int, speed: float = 1.0) -> None:
        if sample_rate <= 0 or speed <= 0:
            raise ValueError(f"need a positive sample rate and speed, got {sample_rate}, {speed}")
        self.sample_rate = sample_rate
        self.speed = speed
        self._start_s: float | None = None

    def due_s(self, frames: int) -> float:
        """Seconds from the start at which audio up to ``frames`` may have been sent."""
        return frames / self.sample_rate / self.speed

    async def wait(self, frames: int) -> None:
        """Wait until ``frames`` frames may have been sent."""
        now_s = time.monotonic()
        if self._start_s is None:
            self._start_s = now_s
        delay_s = self._start_s + self.due_s(frames) - now_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)
