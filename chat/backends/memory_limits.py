"""Per-user frame limits kept in this process (shared by its connections only)."""

from __future__ import annotations

from chat.backends.limits import ALLOWED, Verdict
from chat.limits.buckets import RateLimiter


class MemoryLimiter:
    """`Limiter` over an in-process `RateLimiter` (shared by this process's connections)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def hit(self, action: str, key: int | str, rate: float, burst: int) -> Verdict:
        wait = self.limiter.take(action, key, rate, burst)
        if wait is None:
            return ALLOWED
        return Verdict(wait, self.limiter.refused_in_a_row(action, key))
