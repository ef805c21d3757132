"""A fixed-capacity FIFO of audio frames that drops its oldest frames instead of growing."""

from __future__ import annotations

from typing import Any

import numpy as np


class RingBuffer:
    """Interleaved audio frames, shape ``(frames, channels)``, of one dtype, at most ``capacity`` of them.

    Frames are counted from the first frame ever written: :attr:`start` is the absolute index of the
    oldest frame held and :attr:`end` the index one past the newest (frames written so far). Writing
    past the capacity overwrites the oldest frames and reports how many were lost.
    """

    def __init__(self, capacity: int, channels: int, dtype: np.dtype[Any] | type) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least one frame, got {capacity}")
        self.capacity = capacity
        self._data = np.zeros((capacity, channels), dtype=dtype)
        self._head = 0  # slot of the oldest frame
        self._size = 0
        self._end = 0

    @property
    def start(self) -> int:
        return self._end - self._size

    @property
    def end(self) -> int:
        return self._end

    def __len__(self) -> int:
        return self._size

    def write(self, frames: np.ndarray) -> int:
        """Append ``frames`` (shape ``(n, channels)``); returns how many old frames were dropped for room."""
        n = len(frames)
        if n == 0:
            return 0
        capacity = self.capacity
        self._end += n
        if n >= capacity:
            dropped = self._size + n - capacity
            self._data[:] = frames[n - capacity:]
            self._head = 0
            self._size = capacity
            return dropped
        dropped = max(0, self._size + n - capacity)
        if dropped:
            self._head = (self._head + dropped) % capacity
            self._size -= dropped
        tail = (self._head + self._size) % capacity
        first = min(n, capacity - tail)
        self._data[tail:tail + first] = frames[:first]
        if first < n:
            self._data[:n - first] = frames[first:]
        self._size += n
        return dropped

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Remove and return (a copy of) the oldest ``max_frames`` frames, or all of them."""
        n = self._size if max_frames is None else max(0, min(max_frames, self._size))
        head = self._head
        first = min(n, self.capacity - head)
        if first == n:
            out = self._data[head:head + n].copy()
        else:
            out = np.concatenate((self._data[head:], self._data[:n - first]))
        self._head = (head + n) % self.capacity
        self._size -= n
        return out
