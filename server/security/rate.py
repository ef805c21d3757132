"""Per-client request rate limits: one token bucket per client address.

A bucket holds at most ``burst`` tokens and refills at ``rate_per_s``; each HTTP API request and each
WebSocket connection takes one. An empty bucket refuses with the seconds until the next token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_TRACKED_CLIENTS = 10_000  # beyond this, buckets that have refilled completely are forgotten


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated_s: float


def refill(bucket: Bucket, now_s: float, rate_per_s: float, burst: float) -> None:
    """Add the tokens earned since the bucket's last update (capped at ``burst``)."""
    elapsed_s = max(0.0, now_s - bucket.updated_s)
    bucket.tokens = min(burst, bucket.tokens + elapsed_s * rate_per_s)
    bucket.updated_s = now_s


def take(bucket: Bucket, now_s: float, rate_per_s: float, burst: float) -> float:
    """Take one token: 0.0 if granted, else the seconds until one is available (nothing taken)."""
    refill(bucket, now_s, rate_per_s, burst)
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return 0.0
    return (1.0 - bucket.tokens) / rate_per_s


class RateLimiter:
    """Token buckets by client key. ``rate_per_s <= 0`` disables limiting."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(max(1, burst))
        self._buckets: dict[str, Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client: str, now_s: float) -> float:
        """0.0 if ``client`` may make a request now, else the seconds it must wait."""
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                self._forget_full(now_s)
            if len(self._buckets) >= MAX_TRACKED_CLIENTS:  # still full: forget the oldest quarter
                for old in list(self._buckets)[:MAX_TRACKED_CLIENTS // 4]:
                    del self._buckets[old]
            bucket = self._buckets[client] = Bucket(self.burst, now_s)
        return take(bucket, now_s, self.rate_per_s, self.burst)

    def _forget_full(self, now_s: float) -> None:
        for client, bucket in list(self._buckets.items()):
            refill(bucket, now_s, self.rate_per_s, self.burst)
            if bucket.tokens >= self.burst:
                del self._buckets[client]


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds (at least 1)."""
    return str(max(1, math.ceil(wait_s)))
