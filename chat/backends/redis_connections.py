"""Connections per user, counted for the whole site in Redis.

Key `<prefix>conns:<user id>`: a sorted set of the user's connections
(`<process>:<connection>`), each scored by when it expires. Acquiring is one
Lua script (drop expired entries, count, add if below the cap), so two
processes admitting the same user at once cannot both take the last place.
Every process re-scores its own entries every `ttl / 3` seconds, so the
entries of a process that died (kill -9) stop counting within `ttl`. Redis's
clock (`TIME`) is used, so hosts' clocks need not agree. While Redis does not
answer, each process counts its own connections (the cap then holds per
process, as without Redis).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from redis.asyncio import Redis

from chat.backends.memory_connections import MemoryConnections
from chat.backends.redis_client import REDIS_DOWN, cancel_and_wait

log = logging.getLogger(__name__)

# KEYS: the user's set. ARGV: member, cap, ttl in ms. Returns 1 when counted.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS: the user's set. ARGV: ttl in ms, then members. Re-scores those still there.
REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


class RedisConnections:
    def __init__(self, client: Redis, prefix: str, ttl: float) -> None:
        self._redis = client
        self._key = f"{prefix}conns:"
        self._ttl_ms = int(ttl * 1000)
        self._interval = ttl / 3
        self._process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire = client.register_script(ACQUIRE)
        self._refresh = client.register_script(REFRESH)
        self._local: dict[int, set[int]] = {}  # user id -> this process's connection ids
        self._fallback = MemoryConnections()  # while Redis does not answer
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._beat = asyncio.create_task(self._refresh_forever(), name="connections-refresh")

    async def stop(self) -> None:
        if self._beat is not None:
            await cancel_and_wait(self._beat)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, conns in self._local.items():
                    pipe.zrem(self._key + str(user_id), *(self._member(c) for c in conns))
                await pipe.execute()
        except REDIS_DOWN as exc:
            log.warning("could not remove this process's connection entries: %r", exc)
        self._local.clear()

    async def acquire(self, user_id: int, conn_id: int, cap: int) -> bool:
        # Counted locally first (no await before it): a burst on this process is
        # held to the cap even while Redis answers slowly.
        if not await self._fallback.acquire(user_id, conn_id, cap):
            return False
        try:
            counted = await self._acquire(
                keys=[self._key + str(user_id)], args=[self._member(conn_id), cap, self._ttl_ms]
            )
        except REDIS_DOWN as exc:
            log.warning("redis unavailable, counting this process's connections only: %r", exc)
            counted = 1
        if not counted:
            await self._fallback.release(user_id, conn_id)
            return False
        self._local.setdefault(user_id, set()).add(conn_id)
        return True

    async def release(self, user_id: int, conn_id: int) -> None:
        await self._fallback.release(user_id, conn_id)
        conns = self._local.get(user_id)
        if conns is None or conn_id not in conns:
            return
        conns.discard(conn_id)
        if not conns:
            del self._local[user_id]
        try:
            await self._redis.zrem(self._key + str(user_id), self._member(conn_id))
        except REDIS_DOWN as exc:  # the entry expires within the ttl
            log.warning("could not release a connection entry: %r", exc)

    def _member(self, conn_id: int) -> str:
        return f"{self._process}:{conn_id}"

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user_id, conns in list(self._local.items()):
                        members = [self._member(c) for c in conns]
                        await self._refresh(
                            keys=[self._key + str(user_id)],
                            args=[self._ttl_ms, *members],
                            client=pipe,
                        )
                    await pipe.execute()
            except REDIS_DOWN as exc:
                log.warning("could not refresh connection entries: %r", exc)
