"""Wall-clock dating of a live stream's samples from the times its audio arrived.

Each audio message is marked with the server's wall-clock time (Unix seconds) when it was read off the
transport, against the absolute frame index just past its last frame. A sample is dated by assuming the
audio plays in real time up to that mark: frame ``f`` in a message that ended at frame ``end`` and arrived
at ``t`` happened at ``t - (end - f) / sample_rate``. The error sources are documented in docs/protocol.md,
"Wall-clock time of an onset".
"""

from __future__ import annotations

import bisect
from array import array

MAX_MARKS = 4096  # arrival marks kept per stream (older ones are forgotten first)


class ArrivalClock:
    """Arrival marks ``(end frame, wall time s)`` of one stream, oldest first.

    Kept in two flat arrays (16 bytes a mark, not a tuple of two boxed numbers, ~100 bytes), from index
    ``_first`` on; the forgotten head is cut off once it is half of them.
    """

    def __init__(self, sample_rate: int, max_marks: int = MAX_MARKS) -> None:
        if sample_rate <= 0 or max_marks < 1:
            raise ValueError(f"need a positive rate and room for a mark, got {sample_rate}, {max_marks}")
        self.sample_rate = sample_rate
        self._max_marks = max_marks
        self._frames = array("q")  # end frame of each mark, increasing
        self._walls = array("d")  # wall time s of each mark
        self._first = 0  # index of the oldest mark kept

    def __len__(self) -> int:
        return len(self._frames) - self._first

    def mark(self, end_frame: int, wall_s: float) -> None:
        """Audio up to (not including) absolute frame ``end_frame`` had arrived at ``wall_s``."""
        frames = self._frames
        kept = len(frames) - self._first
        if kept and end_frame <= frames[-1]:
            return  # nothing new arrived (an empty message)
        frames.append(end_frame)
        self._walls.append(wall_s)
        if kept >= self._max_marks:
            self._drop(1)

    def wall_time(self, frame: int, default_s: float) -> float:
        """Unix seconds at which absolute frame ``frame`` happened; ``default_s`` before any mark.

        Dated from the first message that holds the frame; a frame older than every mark kept is dated
        from the oldest one, a frame past every mark from the newest one.
        """
        frames = self._frames
        if len(frames) == self._first:
            return default_s
        at = min(bisect.bisect_right(frames, frame, self._first), len(frames) - 1)
        return self._walls[at] - (frames[at] - frame) / self.sample_rate

    def forget_before(self, frame: int) -> None:
        """Drop marks that only date frames before ``frame`` (always keeping the newest mark)."""
        frames = self._frames
        drop = min(bisect.bisect_right(frames, frame, self._first), len(frames) - 1) - self._first
        if drop > 0:
            self._drop(drop)

    def _drop(self, n: int) -> None:
        self._first += n
        if self._first * 2 >= len(self._frames) and self._first >= 64:
            del self._frames[:self._first]
            del self._walls[:self._first]
            self._first = 0
