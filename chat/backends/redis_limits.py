"""Per-user token buckets in Redis: one bucket per (action, user) for the whole site.

Each `hit` is one Lua script call (one round trip): refill by elapsed time on
Redis's clock, take a token or count a refusal, and let the key expire once a
full bucket would have refilled (an expired bucket and a full one are the same).
When Redis does not answer, the process falls back to its own buckets until it
does (each process then enforces the limit on its own share of connections).
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from chat.backends.limits import ALLOWED, Verdict
from chat.backends.redis_client import REDIS_DOWN
from chat.limits.buckets import MIN_WAIT, RateLimiter

log = logging.getLogger(__name__)

# KEYS: the bucket. ARGV: rate per second, burst.
# Returns {seconds to wait ("0" when allowed), refusals in a row}.
TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'refused')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
local refused = tonumber(b[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  refused = 0
else
  refused = refused + 1
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'refused', refused)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {tostring(wait), refused}
"""

FALLBACK_LOG_EVERY = 30.0  # seconds between "using local buckets" warnings


class RedisLimiter:
    """`Limiter` with its buckets in Redis, and this process's buckets as the fallback."""

    def __init__(self, client: Redis, prefix: str, fallback: RateLimiter) -> None:
        self._script = client.register_script(TOKEN_BUCKET)
        self._prefix = f"{prefix}ratelimit:"
        self._fallback = fallback
        self._warned = 0.0

    async def hit(self, action: str, key: int | str, rate: float, burst: int) -> Verdict:
        try:
            wait, refused = await self._script(
                keys=[f"{self._prefix}{action}:{key}"], args=[rate, burst]
            )
        except REDIS_DOWN as exc:
            now = time.monotonic()
            if now - self._warned > FALLBACK_LOG_EVERY:
                self._warned = now
                log.warning("rate limits fall back to this process's buckets: %r", exc)
            local = self._fallback.take(action, key, rate, burst)
            if local is None:
                return ALLOWED
            return Verdict(local, self._fallback.refused_in_a_row(action, key))
        seconds = float(wait)
        if seconds <= 0:
            return ALLOWED
        return Verdict(max(round(seconds, 3), MIN_WAIT), int(refused))
