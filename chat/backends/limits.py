"""Rate limits shared by every process: per user (frames) and per address (handshakes).

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
    """Token buckets keyed by (action, key): a user id, or a client address."""

    async def hit(self, action: str, key: int | str, rate: float, burst: int) -> Verdict:
        """Take one token from the (action, key) bucket of `burst` tokens refilled at `rate`/s."""
