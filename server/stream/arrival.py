"""Wall-clock dating of a live stream's samples from the times its audio arrived.

Each audio message is marked with the server's wall-clock time (Unix seconds) when it was read off the
transport, against the absolute frame index just past its last frame. A sample is dated by assuming the
audio plays in real time up to that mark: frame ``f`` in a message that ended at frame ``end`` and arrived
at ``t`` happened at ``t - (end - f) / sample_rate``. The error sources are documented in docs/protocol.md,
"Wall-clock time of an onset".
"""

from __future__ import annotations

from collections import deque

MAX_MARKS = 4096  # arrival marks kept per stream (older ones are forgotten first)


class ArrivalClock:
    """Arrival marks ``(end frame, wall time s)`` of one stream, oldest first."""

    def __init__(self, sample_rate: int, max_marks: int = MAX_MARKS) -> None:
        if sample_rate <= 0 or max_marks < 1:
            raise ValueError(f"need a positive rate and room for a mark, got {sample_rate}, {max_marks}")
        self.sample_rate = sample_rate
        self._marks: deque[tuple[int, float]] = deque(maxlen=max_marks)

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, end_frame: int, wall_s: float) -> None:
        """Audio up to (not including) absolute frame ``end_frame`` had arrived at ``wall_s``."""
        marks = self._marks
        if marks and end_frame <= marks[-1][0]:
            return  # nothing new arrived (an empty message)
        marks.append((end_frame, wall_s))

    def wall_time(self, frame: int, default_s: float) -> float:
        """Unix seconds at which absolute frame ``frame`` happened; ``default_s`` before any mark.

        Dated from the first message that holds the frame; a frame older than every mark kept is dated
        from the oldest one, a frame past every mark from the newest one.
        """
        if not self._marks:
            return default_s
        chosen = self._marks[-1]
        for end_frame, wall_s in self._marks:
            if end_frame > frame:
                chosen = (end_frame, wall_s)
                break
        end_frame, wall_s = chosen
        return wall_s - (end_frame - frame) / self.sample_rate

    def forget_before(self, frame: int) -> None:
        """Drop marks that only date frames before ``frame`` (always keeping the newest mark)."""
        marks = self._marks
        while len(marks) > 1 and marks[0][0] <= frame:
            marks.popleft()
