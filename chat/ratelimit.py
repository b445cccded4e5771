"""Token buckets keyed by (action, user): shared by all of a user's connections."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    refused_in_a_row: int = 0


class RateLimiter:
    """In-process token buckets. `take` answers None (allowed) or seconds to wait."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._max_keys = max_keys

    def take(self, action: str, key: int, rate: float, burst: int) -> float | None:
        now = time.monotonic()
        bucket = self._buckets.get((action, key))
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now, rate, burst)
            bucket = self._buckets[(action, key)] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.refused_in_a_row = 0
            return None
        bucket.refused_in_a_row += 1
        return round((1.0 - bucket.tokens) / rate, 3)

    def refused_in_a_row(self, action: str, key: int) -> int:
        bucket = self._buckets.get((action, key))
        return bucket.refused_in_a_row if bucket else 0

    def _forget_full(self, now: float, rate: float, burst: int) -> None:
        # Idle buckets that have refilled carry no state worth keeping.
        for k, b in list(self._buckets.items()):
            if b.tokens + (now - b.updated) * rate >= burst:
                del self._buckets[k]
