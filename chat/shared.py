"""What `CHAT_REDIS_URL` shares besides the broker: presence and per-user rate limits.

Without Redis (a `MemoryBroker`) both stay in this process; with a
`RedisBroker` they use its client (and its key prefix).
"""

from __future__ import annotations

from functools import partial

from chat.broker import Broker
from chat.config import Settings
from chat.limits import Limiter, LocalLimiter
from chat.presence_store import PresenceFactory
from chat.ratelimit import RateLimiter

__all__ = ["Limiter", "shared_limiter", "shared_presence"]


def shared_presence(settings: Settings, broker: Broker) -> PresenceFactory | None:
    """A Redis presence store factory for the hub, or None for in-process presence."""
    if not settings.redis_url:
        return None
    from chat.redis_broker import RedisBroker
    from chat.redis_presence import RedisPresence

    if not isinstance(broker, RedisBroker):
        return None
    return partial(
        RedisPresence,
        broker.client,
        broker.prefix,
        settings.presence_grace,
        settings.presence_ttl,
    )


def shared_limiter(settings: Settings, broker: Broker, local: RateLimiter) -> Limiter:
    """Per-user frame limits: in Redis with a Redis broker, else `local`."""
    if settings.redis_url:
        from chat.redis_broker import RedisBroker
        from chat.redis_limits import RedisLimiter

        if isinstance(broker, RedisBroker):
            return RedisLimiter(broker.client, broker.prefix, local)
    return LocalLimiter(local)
