"""This process's connections to Redis, shared by every Redis backend.

`create_backends` opens one `RedisConnection` per process: fan-out, presence
and the per-user limits all use it (and its key prefix), and it is closed once,
when the process stops. Also the pieces every Redis backend uses: what counts
as "Redis is down", the reconnect backoff, and a cancel that sticks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "chat:"
BACKOFF_BASE = 0.1  # seconds before the first reconnect attempt (before jitter)
BACKOFF_CAP = 5.0  # longest wait between attempts
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 2.0

# Errors that mean "Redis is not answering": anything else is a bug and is raised.
REDIS_DOWN = (RedisError, OSError, TimeoutError)


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before reconnect `attempt` (0, 1, 2...): "equal jitter".

    Half of `min(cap, base * 2**attempt)` is fixed, half random, so workers that
    lost Redis together do not reconnect in lockstep and never spin at zero delay.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it is done, cancelling again if it swallowed one.

    Python 3.11's `asyncio.wait_for` (which redis-py uses around socket writes)
    can drop a cancellation that lands as its inner operation completes, so a
    single `cancel()` may leave a loop running.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())


def redis_client(url: str, retries: int = 1) -> Redis:
    """A client for `url` that fails fast: short timeouts, `retries` immediate retries.

    One retry (the default) replaces a pooled connection that went stale when
    Redis restarted; a Redis that is really down fails the command within
    about the connect timeout so callers can fall back. The subscriber uses
    `retries=0`: reconnecting it is the listener's job (with backoff).
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=0,
        retry=Retry(NoBackoff(), retries),
    )


class RedisConnection:
    """The process's Redis clients for one URL and key prefix.

    `commands` (publishes, pings, presence and rate-limit scripts) retries once
    at once; `subscriber` (pub/sub) never retries by itself: reconnecting it is
    the fan-out listener's job, with backoff. Channels and keys are prefixed
    (`chat:` by default) because pub/sub channels are shared by every database
    number of a Redis server, and several sites may share one Redis.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.commands = redis_client(url)
        self.subscriber = redis_client(url, retries=0)

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.subscriber.aclose()
