"""Per-user frame rate limits behind one small interface (the `Limiter` protocol).

`memory_limits.MemoryLimiter` answers from this process's token buckets (the
default); `redis_limits.RedisLimiter` keeps the buckets in Redis so that a
user's connections on every worker and host draw from one bucket.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Verdict(NamedTuple):
    """`retry_after` is None when the frame is allowed, else seconds to wait."""

    retry_after: float | None
    refused_in_a_row: int


ALLOWED = Verdict(None, 0)


class Limiter(Protocol):
    """Token buckets keyed by (action, user id)."""

    async def hit(self, action: str, key: int, rate: float, burst: int) -> Verdict:
        """Take one token from the (action, key) bucket of `burst` tokens refilled at `rate`/s."""
