"""A bounded FIFO of audio frames that drops its oldest frames instead of growing past its capacity."""

from __future__ import annotations

from typing import Any

import numpy as np

# Storage starts this small (43 ms of 48 kHz: two 20 ms chunks) and doubles on demand, up to the capacity; it
# halves again once what waits has stayed under a quarter of it (see RingBuffer). It is allocated, not zeroed
# (no slot is read before it is written), so a stream that keeps up touches only the pages its chunks reach.
INITIAL_FRAMES = 2048


class RingBuffer:
    """Interleaved audio frames, shape ``(frames, channels)``, of one dtype, at most ``capacity`` of them.

    Frames are counted from the first frame ever written: :attr:`start` is the absolute index of the
    oldest frame held and :attr:`end` the index one past the newest (frames written so far). Writing
    past the capacity overwrites the oldest frames and reports how many were lost. Storage grows by
    doubling only while more frames wait than fit, so a stream that keeps up holds a few KiB, not its
    whole capacity; it halves at a read that empties it when at most a quarter of it was used since the
    previous read, so a stream that fell behind once gives the memory back once it keeps up again.
    """

    __slots__ = ("__weakref__", "_data", "_end", "_head", "_peak", "_size", "capacity")

    def __init__(self, capacity: int, channels: int, dtype: np.dtype[Any] | type) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least one frame, got {capacity}")
        self.capacity = capacity
        self._data = np.empty((min(capacity, INITIAL_FRAMES), channels), dtype=dtype)
        self._head = 0  # slot of the oldest frame
        self._size = 0
        self._end = 0
        self._peak = 0  # most frames held since the last read

    @property
    def start(self) -> int:
        return self._end - self._size

    @property
    def end(self) -> int:
        return self._end

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def channels(self) -> int:
        return int(self._data.shape[1])

    @property
    def allocated_frames(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        return self._size

    def _grow(self, needed: int) -> None:
        slots = len(self._data)
        while slots < needed:
            slots *= 2
        data = np.empty((min(slots, self.capacity), self._data.shape[1]), dtype=self._data.dtype)
        data[:self._size] = self._oldest(self._size, copy=False)
        self._data = data
        self._head = 0

    def _oldest(self, n: int, copy: bool) -> np.ndarray:
        """The oldest ``n`` frames: a view when they are contiguous and ``copy`` is false."""
        head, slots = self._head, len(self._data)
        first = min(n, slots - head)
        if first == n:
            view = self._data[head:head + n]
            return view.copy() if copy else view
        return np.concatenate((self._data[head:], self._data[:n - first]))

    def write(self, frames: np.ndarray) -> int:
        """Append ``frames`` (shape ``(n, channels)``); returns how many old frames were dropped for room."""
        n = len(frames)
        data, size = self._data, self._size
        slots = len(data)
        if n > 0 and size + n <= slots:  # the usual chunk: it fits after what waits, nothing is dropped
            tail = self._head + size
            if tail >= slots:
                tail -= slots
            if tail + n <= slots:
                data[tail:tail + n] = frames
                self._end += n
                size += n
                self._size = size
                if size > self._peak:
                    self._peak = size
                return 0
        return self._write_any(frames, n)

    def _write_any(self, frames: np.ndarray, n: int) -> int:
        """:meth:`write` in every case: the storage grows, the frames wrap, old frames are dropped."""
        if n == 0:
            return 0
        self._end += n
        capacity = self.capacity
        if n >= capacity:
            dropped = self._size + n - capacity
            if len(self._data) < capacity:
                self._data = np.empty((capacity, self._data.shape[1]), dtype=self._data.dtype)
            self._data[:] = frames[n - capacity:]
            self._head = 0
            self._size = self._peak = capacity
            return dropped
        if self._size + n > len(self._data) and len(self._data) < capacity:
            self._grow(self._size + n)
        slots = len(self._data)
        dropped = max(0, self._size + n - slots)
        if dropped:
            self._head = (self._head + dropped) % slots
            self._size -= dropped
        tail = (self._head + self._size) % slots
        first = min(n, slots - tail)
        self._data[tail:tail + first] = frames[:first]
        if first < n:
            self._data[:n - first] = frames[first:]
        self._size += n
        if self._size > self._peak:
            self._peak = self._size
        return dropped

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Remove and return (a copy of) the oldest ``max_frames`` frames, or all of them."""
        n = self._take(max_frames)
        out = self._oldest(n, copy=True)
        self._drop_oldest(n)
        return out

    def read_bytes(self, max_frames: int | None = None) -> bytes | bytearray:
        """:meth:`read`, as the frames' interleaved bytes, copied once (not to an array and then to bytes)."""
        n = self._size if max_frames is None or max_frames >= self._size else max(0, max_frames)
        head, slots = self._head, len(self._data)
        if head + n <= slots:
            out: bytes | bytearray = self._data[head:head + n].tobytes()
        else:  # the frames wrap around the end of the buffer: both parts into one buffer
            first = slots - head
            joined = bytearray(n * self._data.shape[1] * self._data.itemsize)
            target = np.frombuffer(joined, self._data.dtype).reshape(n, self._data.shape[1])
            target[:first] = self._data[head:]
            target[first:] = self._data[:n - first]
            out = joined
        self._drop_oldest(n)
        return out

    def _take(self, max_frames: int | None) -> int:
        return self._size if max_frames is None else max(0, min(max_frames, self._size))

    def _drop_oldest(self, n: int) -> None:
        slots = len(self._data)
        self._size -= n
        # Emptied, the next write starts at the first slot (a chunk then rarely wraps around the end).
        self._head = (self._head + n) % slots if self._size else 0
        if self._size == 0 and slots > INITIAL_FRAMES and 4 * self._peak <= slots:
            self._data = np.empty((max(INITIAL_FRAMES, slots // 2), self._data.shape[1]), self._data.dtype)
        self._peak = self._size
