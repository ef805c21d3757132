"""How often a pool lane sends its streams' audio to its worker: the dispatch interval, by load.

Every call into a lane's worker costs a fixed amount besides its streams' own work: the call's pickles and
shared memory on the event loop, two pipe writes and reads, and two wake-ups (with their context switches)
of processes that share a core. The scheduler waits at least the dispatch interval between two calls of a
lane, so the streams whose audio arrives within it share one call. A short interval keeps a lone stream's
latency low; under load the same interval means many small calls, each paying the fixed cost.

The interval can therefore grow with the streams a lane serves: ``per_stream_ms`` for each of them, never
less than ``min_interval_ms`` and never more than ``max_interval_ms`` (which bounds what a chunk may wait
before it is sent, so the latency the rule adds at any load). By default it grows from nothing: a lane with
a few streams sends each one's audio almost as it comes, and from 80 streams on it waits the 4 ms it always
waited (see below).
"""

from __future__ import annotations

from dataclasses import dataclass

# The embedded default: 0.05 ms a stream, at most 4 ms (from 80 streams on a lane). It was a fixed 4 ms: with
# 16 streams on one core (a chunk every 1.25 ms) an onset's chunk then waited 1.9 ms at the median and 4.7 ms
# at p99 for its lane's next call (bench/onset_path.py), which the growth takes to 0.04 / 1.3 ms; from 80
# streams on the interval is the same 4 ms, so where capacity is decided (192-320 streams on a core) nothing
# changes. Growing on past 4 ms (0.05 ms a stream up to 16 ms, bench/README.md "Dispatch interval by load")
# cost 8-12 % less CPU per chunk at 192 streams but held no more streams and added 6-7 ms to the overhead's
# p50 there: an option (--max-dispatch-interval-ms), not the default.
MIN_INTERVAL_MS = 0.0
PER_STREAM_MS = 0.05
MAX_INTERVAL_MS = 4.0


def dispatch_interval_s(lane_streams: int, *, min_interval_ms: float, per_stream_ms: float,
                        max_interval_ms: float) -> float:
    """Seconds a lane with ``lane_streams`` live streams waits at least between two calls to its worker.

    ``lane_streams`` × ``per_stream_ms``, clamped to [``min_interval_ms``, ``max_interval_ms``] (if the
    bounds cross, ``max_interval_ms`` wins: it is the latency bound).
    """
    interval_ms = min(max(lane_streams * per_stream_ms, min_interval_ms), max_interval_ms)
    return max(0.0, interval_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class DispatchRule:
    """The rule's parameters (``--dispatch-interval-ms``, ``--dispatch-per-stream-ms``,
    ``--max-dispatch-interval-ms``), applied by :meth:`interval_s`."""

    min_interval_ms: float = MIN_INTERVAL_MS
    per_stream_ms: float = PER_STREAM_MS
    max_interval_ms: float = MAX_INTERVAL_MS

    def interval_s(self, lane_streams: int) -> float:
        """Seconds between two calls of a lane that serves ``lane_streams`` live streams."""
        return dispatch_interval_s(lane_streams, min_interval_ms=self.min_interval_ms,
                                   per_stream_ms=self.per_stream_ms, max_interval_ms=self.max_interval_ms)
