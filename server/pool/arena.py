"""Shared memory through which a lane's calls carry their large buffers (a batch's audio) to its worker.

A call is pickled with protocol 5: buffers in its arguments that offer themselves out of band (numpy
arrays, and the audio of a live stream's :class:`~server.stream.in_worker.Job`) come out of the pickle, the
server copies them into the lane's :class:`Arena` instead of into the call pipe, and only the small pickle
and the buffers' places cross the pipe. The worker copies each buffer out of the arena as it unpickles
the call, so nothing it keeps points into the arena. Compared with writing the audio through the pipe,
this saves the server a copy into the pickle and the pipe's kernel copies on both sides
(``bench/pool_rtt.py`` measures one call both ways).

The arena is a ``memfd`` (anonymous memory, Linux): it has no name to leak, and it is freed when the
server and its worker have both closed it, however they end. Its file descriptor reaches the worker as a
:class:`SharedFd` in the worker's start arguments.

Space is reserved per call and released when that call's answer arrives; a lane's calls are answered in
the order they were made, so reservations are released oldest first (a ring). A call whose buffers do
not fit goes through the pipe whole, as before.

A page of the arena, once written, stays in memory (in the server and in the worker that read it) until it
is given back: after a burst of large calls (streams that fell behind send up to 0.5 s each) the arena
would hold megabytes that the calls since no longer use. So, at most once per :data:`RELEASE_EVERY_S`,
when no call holds a reservation, the arena gives back the pages past both :data:`KEEP_BYTES` and the
furthest byte the calls of that interval used (:func:`unused_pages`).
"""

from __future__ import annotations

import mmap
import os
import pickle
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing import reduction

# Per lane. A lane's batch of 128 streams' longest jobs (0.5 s of 48 kHz float32 each) is 12 MiB; a
# larger call goes through the pipe. Only the pages calls have used take memory.
ARENA_BYTES = 16 << 20
# Kept in memory whatever the calls: a batch of 256 streams' 20 ms chunks of 48 kHz float32 is 0.94 MiB.
KEEP_BYTES = 1 << 20
RELEASE_EVERY_S = 1.0  # the least time between two checks for pages to give back
Span = tuple[int, int]  # (offset, bytes) of one buffer in the arena


def unused_pages(touched_bytes: int, used_bytes: int, keep_bytes: int,
                 page_bytes: int = mmap.PAGESIZE) -> tuple[int, int] | None:
    """The pages to give back, ``(offset, length)`` in bytes, or ``None``.

    ``touched_bytes``: the arena's first bytes written since pages were last given back; ``used_bytes``:
    the furthest byte the calls of the last interval reserved. Everything from the page boundary at or past
    ``max(used_bytes, keep_bytes)`` up to the end of the page holding ``touched_bytes`` goes back.
    """
    start = -(-max(used_bytes, keep_bytes) // page_bytes) * page_bytes
    end = -(-touched_bytes // page_bytes) * page_bytes
    return (start, end - start) if end > start else None


class SharedFd:
    """A file descriptor that crosses to a process being started: its pickle carries a duplicate."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[object, tuple[object]]:
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(duplicate: object) -> SharedFd:
    return SharedFd(duplicate.detach())  # type: ignore[attr-defined]


class Arena:
    """The server's side: the shared memory of one lane and its reservations, oldest first."""

    def __init__(self, size_bytes: int = ARENA_BYTES, keep_bytes: int = KEEP_BYTES,
                 release_every_s: float = RELEASE_EVERY_S) -> None:
        self.size_bytes = size_bytes
        self.fd = os.memfd_create("transient-pool-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size_bytes)
        self._map = mmap.mmap(self.fd, size_bytes)
        self._held: deque[Span] = deque()
        self._keep_bytes = keep_bytes
        self._release_every_s = release_every_s
        self.touched_bytes = 0  # the arena's first bytes written since pages were last given back
        self._used_bytes = 0  # the furthest byte reserved in the current interval
        self._interval_start_s = time.monotonic()
        self.released_bytes = 0  # given back so far, in all

    def place(self, buffers: Sequence[pickle.PickleBuffer]) -> list[Span] | None:
        """Copy ``buffers`` into one new reservation; their spans, or ``None`` if they do not fit now."""
        views = [buffer.raw() for buffer in buffers]
        size = sum(view.nbytes for view in views)
        start = self._reserve(size)
        if start is None:
            return None
        end = start + size
        if end > self.touched_bytes:
            self.touched_bytes = end
        if end > self._used_bytes:
            self._used_bytes = end
        spans = []
        for view in views:
            end = start + view.nbytes
            self._map[start:end] = view
            spans.append((start, view.nbytes))
            start = end
        return spans

    def release_oldest(self) -> None:
        """The oldest reservation's call was answered: its space is free again."""
        if self._held:  # else cleared meanwhile (the worker died, or the lane closed)
            self._held.popleft()
        if not self._held:
            self.give_back(time.monotonic())

    def clear(self) -> None:
        """Forget every reservation (the worker died: none of its calls will be answered)."""
        self._held.clear()

    def give_back(self, now_s: float) -> int:
        """If an interval has passed and no call holds a reservation, give back the pages the calls of the
        interval did not use (:func:`unused_pages`); returns the bytes given back. Their contents are gone,
        in the server's and the worker's mapping alike (``MADV_REMOVE`` frees the memory itself)."""
        if self._held or now_s - self._interval_start_s < self._release_every_s:
            return 0
        pages = unused_pages(self.touched_bytes, self._used_bytes, self._keep_bytes)
        self._interval_start_s, self._used_bytes = now_s, 0
        if pages is None:
            return 0
        offset, length = pages
        self._map.madvise(mmap.MADV_REMOVE, offset, length)
        self.touched_bytes = offset
        self.released_bytes += length
        return length

    @property
    def reserved(self) -> int:
        return len(self._held)

    def close(self) -> None:
        """Unmap and close the memory; a second call does nothing (its fd number may be another's by then)."""
        self._held.clear()
        self._map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _reserve(self, size: int) -> int | None:
        held = self._held
        if size == 0 or size > self.size_bytes:
            return None
        if not held:
            start: int | None = 0  # reuse the first pages: an idle lane's arena stays small in memory
        else:
            head, tail = held[0][0], held[-1][0] + held[-1][1]
            if tail > head:  # in use: [head, tail)
                start = tail if self.size_bytes - tail >= size else 0 if head >= size else None
            else:  # wrapped, in use: [head, end) and [0, tail)
                start = tail if head - tail >= size else None
        if start is not None:
            held.append((start, size))
        return start


class ArenaView:
    """The worker's side: the same shared memory, read-only."""

    def __init__(self, shared: SharedFd, size_bytes: int) -> None:
        self._map = mmap.mmap(shared.fd, size_bytes, prot=mmap.PROT_READ)
        os.close(shared.fd)

    def copies(self, spans: Sequence[Span]) -> list[bytes]:
        """A copy of each span's bytes, for ``pickle.loads(..., buffers=...)``."""
        return [self._map[offset:offset + size] for offset, size in spans]
