"""Presence and rate limits shared through Redis, in process: each store plays one server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from chat.backends.limits import Limiter
from chat.backends.memory_limits import MemoryLimiter
from chat.backends.memory_presence import MemoryPresence
from chat.backends.presence import PresenceStore
from chat.backends.redis_client import redis_client
from chat.backends.redis_connections import RedisConnections
from chat.backends.redis_limits import RedisLimiter
from chat.backends.redis_presence import RedisPresence
from chat.backends.redis_repeats import RedisRepeats
from chat.limits.buckets import RateLimiter
from chat.protocol import UserRef
from tests.redis_support import shared_redis_url, unique_prefix

pytestmark = pytest.mark.redis

ALICE = UserRef(id=1, name="alice", role="user")
BOB = UserRef(id=2, name="bob", role="user")
Events = list[tuple[str, str, str]]


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    c = redis_client(shared_redis_url())
    yield c
    await c.aclose()


PresenceMaker = Callable[..., Awaitable[tuple[RedisPresence, Events]]]


@pytest.fixture
async def make_presence(client: Redis) -> AsyncIterator[PresenceMaker]:
    """Presence stores of one site (one prefix), as if in different processes."""
    prefix = unique_prefix()
    made: list[RedisPresence] = []

    async def make(grace: float = 0.0, ttl: float = 15.0) -> tuple[RedisPresence, Events]:
        events: Events = []
        store = RedisPresence(
            client, prefix, grace, ttl, lambda room, ev, user: events.append((room, ev, user.name))
        )
        await store.start()
        made.append(store)
        return store, events

    yield make
    for store in made:
        await store.stop()
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)


async def test_a_user_on_two_processes_joins_once_and_leaves_once(
    make_presence: PresenceMaker,
) -> None:
    a, events = await make_presence()
    b, events_b = await make_presence()
    await a.add("r", 1, ALICE)
    await b.add("r", 7, ALICE)  # the same user's second connection, elsewhere
    await b.add("r", 8, BOB)
    assert [u.name for u in await a.members("r")] == ["alice", "bob"]
    assert events + events_b == [("r", "join", "alice"), ("r", "join", "bob")]
    await a.remove("r", 1, ALICE)
    await asyncio.sleep(0.1)
    assert len(events) == 1, "alice is still connected on b"
    await b.remove("r", 7, ALICE)
    await asyncio.sleep(0.1)
    assert events_b[-1] == ("r", "leave", "alice")
    assert [u.name for u in await a.members("r")] == ["bob"]
    assert await a.snapshot() == {"r": [BOB]}


async def test_a_quick_reconnect_elsewhere_within_grace_announces_nothing(
    make_presence: PresenceMaker,
) -> None:
    a, events_a = await make_presence(grace=0.3)
    b, events_b = await make_presence(grace=0.3)
    await a.add("r", 1, ALICE)
    await a.remove("r", 1, ALICE)
    assert [u.name for u in await b.members("r")] == ["alice"]  # within grace
    await b.add("r", 2, ALICE)
    await asyncio.sleep(0.5)
    assert events_a + events_b == [("r", "join", "alice")]
    await b.remove("r", 2, ALICE)
    await asyncio.sleep(0.5)
    assert events_b[-1] == ("r", "leave", "alice")
    assert await a.members("r") == []


async def test_a_crashed_processes_entries_expire_and_their_users_leave(
    make_presence: PresenceMaker, client: Redis
) -> None:
    survivor, events = await make_presence(ttl=0.6)
    crashed = RedisPresence(client, survivor._users_key.split("presence:")[0], 0, 0.6, print)
    # `crashed` writes its entries and then never refreshes them (no `start`).
    await crashed.add("r", 1, BOB)
    await survivor.add("r", 5, ALICE)
    assert [u.name for u in await survivor.members("r")] == ["alice", "bob"]
    async with asyncio.timeout(3):
        while ("r", "leave", "bob") not in events:
            await asyncio.sleep(0.05)
    assert [u.name for u in await survivor.members("r")] == ["alice"]
    assert ("r", "leave", "alice") not in events, "refreshed entries stay"


async def test_entries_lost_by_redis_come_back_on_the_next_refresh(
    make_presence: PresenceMaker, client: Redis
) -> None:
    a, events = await make_presence()
    await a.add("r", 1, ALICE)
    keys = [k async for k in client.scan_iter(f"{a._users_key.split('presence:')[0]}*")]
    await client.delete(*keys)  # as after a Redis restart without persistence
    assert await a.members("r") == []
    await a.refresh("r")
    assert [u.name for u in await a.members("r")] == ["alice"]
    assert events == [("r", "join", "alice"), ("r", "join", "alice")]


async def test_local_store_keeps_the_old_semantics() -> None:
    events: Events = []
    store: PresenceStore = MemoryPresence(
        0, lambda room, ev, user: events.append((room, ev, user.name))
    )
    await store.add("r", 1, ALICE)
    await store.add("r", 2, ALICE)
    await store.remove("r", 1, ALICE)
    assert await store.members("r") == [ALICE]
    await store.remove("r", 2, ALICE)
    assert events == [("r", "join", "alice"), ("r", "leave", "alice")]
    await store.stop()


@pytest.fixture(params=["local", "redis"])
async def limiters(
    request: pytest.FixtureRequest, client: Redis
) -> AsyncIterator[tuple[Limiter, Limiter]]:
    """Two processes' limiters: separate buckets locally, one bucket through Redis."""
    if request.param == "local":
        yield MemoryLimiter(RateLimiter()), MemoryLimiter(RateLimiter())
        return
    prefix = unique_prefix()
    yield RedisLimiter(client, prefix, RateLimiter()), RedisLimiter(client, prefix, RateLimiter())
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)


async def test_token_bucket(
    limiters: tuple[Limiter, Limiter], request: pytest.FixtureRequest
) -> None:
    a, b = limiters
    allowed = [(await a.hit("send", 1, 0.5, 3)).retry_after is None for _ in range(3)]
    assert allowed == [True, True, True]
    first = await a.hit("send", 1, 0.5, 3)
    assert first.retry_after is not None and 0 < first.retry_after <= 2.0
    assert first.refused_in_a_row == 1
    assert (await a.hit("send", 1, 0.5, 3)).refused_in_a_row == 2
    assert (await a.hit("typing", 1, 0.5, 3)).retry_after is None, "actions are separate"
    assert (await a.hit("send", 2, 0.5, 3)).retry_after is None, "users are separate"
    other = await b.hit("send", 1, 0.5, 3)
    if "redis" in request.node.name:
        assert other.refused_in_a_row == 3, "one bucket for the user on every process"
    else:
        assert other.retry_after is None, "each process has its own buckets"


async def test_token_bucket_refills(client: Redis) -> None:
    limiter = RedisLimiter(client, unique_prefix(), RateLimiter())
    assert (await limiter.hit("send", 1, 20, 1)).retry_after is None
    refused = await limiter.hit("send", 1, 20, 1)
    assert refused.retry_after is not None and refused.retry_after <= 0.05
    await asyncio.sleep(0.06)
    assert (await limiter.hit("send", 1, 20, 1)) == (None, 0)


async def test_limiter_falls_back_to_local_buckets_when_redis_is_down() -> None:
    dead = redis_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    limiter = RedisLimiter(dead, "x:", RateLimiter())
    verdicts = [await limiter.hit("send", 1, 0.1, 2) for _ in range(3)]
    assert [v.retry_after is None for v in verdicts] == [True, True, False]
    await dead.aclose()


# --- connections per user --------------------------------------------------------------


async def test_the_connection_cap_holds_across_processes(client: Redis) -> None:
    prefix = unique_prefix()
    a, b = RedisConnections(client, prefix, 5), RedisConnections(client, prefix, 5)
    assert await a.acquire(7, 1, 2)
    assert await b.acquire(7, 1, 2), "connection ids are per process: B's 1 is another"
    assert not await a.acquire(7, 2, 2), "the user has two, one on each process"
    assert not await b.acquire(7, 2, 2)
    assert await a.acquire(8, 2, 2), "users are separate"
    await b.release(7, 1)
    assert await a.acquire(7, 2, 2), "a released place is free on every process"
    await a.stop()
    assert await b.acquire(7, 3, 2), "a stopped process lets go of its entries"


async def test_a_crashed_processes_connections_stop_counting(client: Redis) -> None:
    prefix = unique_prefix()
    crashed, live = RedisConnections(client, prefix, 0.3), RedisConnections(client, prefix, 0.3)
    await live.start()
    assert await crashed.acquire(7, 1, 1)  # never refreshed: as if killed
    assert await live.acquire(7, 1, 1) is False
    await asyncio.sleep(0.5)
    assert await live.acquire(7, 1, 1), "the dead process's entry expired"
    await asyncio.sleep(0.5)
    assert not await live.acquire(7, 2, 1), "the live process's own entry is refreshed"
    await live.stop()


async def test_connections_fall_back_to_this_process_when_redis_is_down() -> None:
    dead = redis_client("redis://127.0.0.1:1/0")
    conns = RedisConnections(dead, "x:", 5)
    assert [await conns.acquire(7, c, 2) for c in (1, 2, 3)] == [True, True, False]
    await conns.release(7, 1)
    assert await conns.acquire(7, 3, 2)
    await dead.aclose()


# --- repeated events (alerts) ----------------------------------------------------------


async def test_repeats_are_counted_for_the_site_and_fire_once(client: Redis) -> None:
    prefix = unique_prefix()
    a = RedisRepeats(client, prefix, "closes", 3, 0.5)
    b = RedisRepeats(client, prefix, "closes", 3, 0.5)
    assert [await a.hit("u1"), await b.hit("u1")] == [False, False]
    assert await a.hit("u1"), "the third event, whichever process saw the others"
    assert not await b.hit("u1") and not await b.hit("u1") and not await a.hit("u1")
    assert not await a.hit("u2"), "keys are separate"
    other = RedisRepeats(client, prefix, "logins", 1, 0.5)
    assert await other.hit("u1"), "names are separate"
    await asyncio.sleep(0.6)
    assert [await a.hit("u1"), await b.hit("u1"), await a.hit("u1")] == [False, False, True]


async def test_repeats_fall_back_to_this_process_when_redis_is_down() -> None:
    dead = redis_client("redis://127.0.0.1:1/0")
    repeats = RedisRepeats(dead, "x:", "closes", 2, 10)
    assert [await repeats.hit("k") for _ in range(3)] == [False, True, False]
    await dead.aclose()
