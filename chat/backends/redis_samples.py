"""Every process's chart samples in Redis, for a console connected to any of them.

Keys (under the site prefix): `samples:<node>`, a list of the node's samples (JSON,
oldest first, at most `keep`), and `samples:nodes`, a sorted set of nodes scored by
when each last sampled. A node that died stops sampling: its past samples still
count for the hour they cover, and it drops out of the health view's list of
processes. One pipelined round trip per sample and per read.
"""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

HOUR = 3600.0


class RedisSamples:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._nodes = f"{prefix}samples:nodes"
        self._list = f"{prefix}samples:"

    async def put(self, node: str, sample: str, keep: int) -> None:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._list + node, sample)
            pipe.ltrim(self._list + node, -keep, -1)
            pipe.expire(self._list + node, int(HOUR) + 60)
            pipe.zadd(self._nodes, {node: now})
            pipe.zremrangebyscore(self._nodes, "-inf", now - HOUR)
            await pipe.execute()

    async def all(self, since: float) -> dict[str, tuple[float, list[str]]]:
        # The client decodes responses: members and list items are str.
        seen = cast(
            list[tuple[str, float]],
            await self._redis.zrangebyscore(self._nodes, since, "+inf", withscores=True),
        )
        if not seen:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for node, _ in seen:
                pipe.lrange(self._list + node, 0, -1)
            lists = cast(list[list[str]], await pipe.execute())
        return {
            node: (float(score), samples)
            for (node, score), samples in zip(seen, lists, strict=True)
        }
