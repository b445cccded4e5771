"""Repeated events counted for the whole site in Redis.

Keys `<prefix>repeats:<name>:<key>`: a sorted set of the events of the last
window (scored by time) and a `:fired` flag that lives one window. One Lua
script counts, fires at most once per window and starts counting afresh after
firing, so several processes counting the same key fire once between them.
While Redis does not answer, this process counts on its own.
"""

from __future__ import annotations

import logging
import uuid

from redis.asyncio import Redis

from chat.backends.memory_repeats import RepeatCounter
from chat.backends.redis_client import REDIS_DOWN

log = logging.getLogger(__name__)

# KEYS: events, fired flag. ARGV: threshold, window ms, a unique member. 1: fire.
COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  return 0
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisRepeats:
    def __init__(
        self, client: Redis, prefix: str, name: str, threshold: int, window: float
    ) -> None:
        self.threshold = threshold
        self._key = f"{prefix}repeats:{name}:"
        self._window_ms = max(1, int(window * 1000))
        self._script = client.register_script(COUNT)
        self._fallback = RepeatCounter(threshold, window)

    async def hit(self, key: str) -> bool:
        events = self._key + key
        try:
            fired = await self._script(
                keys=[events, events + ":fired"],
                args=[self.threshold, self._window_ms, uuid.uuid4().hex],
            )
        except REDIS_DOWN as exc:
            log.warning("redis unavailable, counting repeats in this process: %r", exc)
            return self._fallback.count(key)
        return bool(fired)
