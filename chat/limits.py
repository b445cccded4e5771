"""Per-user frame rate limits behind one small interface, kept here or in Redis.

`LocalLimiter` answers from this process's `RateLimiter` (the default);
`chat.redis_limits.RedisLimiter` keeps the buckets in Redis so that a user's
connections on every worker and host draw from one bucket.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from chat.ratelimit import RateLimiter


class Verdict(NamedTuple):
    """`retry_after` is None when the frame is allowed, else seconds to wait."""

    retry_after: float | None
    refused_in_a_row: int


ALLOWED = Verdict(None, 0)


class Limiter(Protocol):
    """Token buckets keyed by (action, user id)."""

    async def hit(self, action: str, key: int, rate: float, burst: int) -> Verdict:
        """Take one token from the (action, key) bucket of `burst` tokens refilled at `rate`/s."""


class LocalLimiter:
    """`Limiter` over an in-process `RateLimiter` (shared by this process's connections)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def hit(self, action: str, key: int, rate: float, burst: int) -> Verdict:
        wait = self.limiter.take(action, key, rate, burst)
        if wait is None:
            return ALLOWED
        return Verdict(wait, self.limiter.refused_in_a_row(action, key))
