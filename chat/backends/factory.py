"""The one place that decides between the memory and Redis backends."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from chat.backends.connections import ConnectionCounter
from chat.backends.fanout import Broker
from chat.backends.limits import Limiter
from chat.backends.presence import PresenceFactory
from chat.backends.repeats import RepeatsFactory
from chat.backends.samples import Samples
from chat.backends.tickets import Tickets
from chat.config import Settings
from chat.limits.buckets import RateLimiter

if TYPE_CHECKING:
    from chat.backends.redis_client import RedisConnection


@dataclass(frozen=True, slots=True)
class Backends:
    """Fan-out, presence and per-user limits of this process, and what they run on."""

    kind: Literal["memory", "redis"]
    fanout: Broker
    presence: PresenceFactory  # given the hub's change callback
    limits: Limiter  # per user (frames) and per address (handshakes)
    connections: ConnectionCounter  # per user, for the connection cap
    repeats: RepeatsFactory  # repeated events that raise alerts
    tickets: Tickets  # single-use stream tickets
    samples: Samples  # the console's chart samples of every process
    redis: RedisConnection | None = None  # closed by `close`, after the users stopped

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def create_backends(settings: Settings) -> Backends:
    """Memory backends without `CHAT_REDIS_URL`; Redis ones, on one connection, with it."""
    local_buckets = RateLimiter()  # the per-user limits' own, or Redis's fallback
    if not settings.redis_url:
        from chat.backends.memory_connections import MemoryConnections
        from chat.backends.memory_fanout import MemoryBroker
        from chat.backends.memory_limits import MemoryLimiter
        from chat.backends.memory_presence import MemoryPresence
        from chat.backends.memory_repeats import RepeatCounter
        from chat.backends.memory_samples import MemorySamples
        from chat.backends.memory_tickets import MemoryTickets

        return Backends(
            "memory",
            MemoryBroker(),
            partial(MemoryPresence, settings.presence_grace),
            MemoryLimiter(local_buckets),
            MemoryConnections(),
            lambda _name, threshold, window: RepeatCounter(threshold, window),
            MemoryTickets(),
            MemorySamples(),
        )
    # Imported only here: a process without Redis never loads the Redis modules.
    from chat.backends.redis_client import RedisConnection
    from chat.backends.redis_connections import RedisConnections
    from chat.backends.redis_fanout import RedisBroker
    from chat.backends.redis_limits import RedisLimiter
    from chat.backends.redis_presence import RedisPresence
    from chat.backends.redis_repeats import RedisRepeats
    from chat.backends.redis_samples import RedisSamples
    from chat.backends.redis_tickets import RedisTickets

    redis = RedisConnection(settings.redis_url, settings.redis_prefix)
    return Backends(
        "redis",
        RedisBroker(redis),
        partial(
            RedisPresence,
            redis.commands,
            redis.prefix,
            settings.presence_grace,
            settings.presence_ttl,
        ),
        RedisLimiter(redis.commands, redis.prefix, local_buckets),
        RedisConnections(redis.commands, redis.prefix, settings.presence_ttl),
        partial(RedisRepeats, redis.commands, redis.prefix),
        RedisTickets(redis.commands, redis.prefix),
        RedisSamples(redis.commands, redis.prefix),
        redis,
    )
