"""The Broker protocol, one suite for every implementation (memory and Redis), in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path

import pytest

from chat.backends.fanout import Broker, BrokerUnavailable
from chat.backends.memory_fanout import MemoryBroker
from chat.backends.redis_client import backoff_delay
from chat.backends.redis_fanout import RedisBroker
from tests.redis_support import PrivateRedis, shared_redis_url, unique_prefix

Received = list[tuple[str, str]]


class Inbox:
    def __init__(self) -> None:
        self.items: Received = []
        self.changed = asyncio.Event()

    def __call__(self, channel: str, payload: str) -> None:
        self.items.append((channel, payload))
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> Received:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.items


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_broker(request: pytest.FixtureRequest) -> Iterator[Callable[[], Broker]]:
    """Brokers of one kind; Redis ones share a per-test prefix, like processes of one site."""
    if request.param == "memory":
        shared = MemoryBroker()  # one process: every "instance" is the same broker
        yield lambda: shared
        return
    url, prefix = shared_redis_url(), unique_prefix()
    yield lambda: RedisBroker.connect(url, prefix=prefix)


@pytest.fixture
async def broker(make_broker: Callable[[], Broker]) -> AsyncIterator[tuple[Broker, Inbox]]:
    inbox = Inbox()
    b = make_broker()
    await b.start(inbox)
    yield b, inbox
    await b.stop()


async def test_subscribed_channels_are_delivered_in_order(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("room:a")
    await b.subscribe("room:a")  # idempotent
    for i in range(200):
        await b.publish("room:a", f"m{i}")
    await b.publish("room:other", "not subscribed")
    items = await inbox.wait_for(200)
    assert items == [("room:a", f"m{i}") for i in range(200)]


async def test_concurrent_publishes_keep_call_order(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("c")
    await asyncio.gather(*(b.publish("c", str(i)) for i in range(500)))
    items = await inbox.wait_for(500)
    assert [int(p) for _, p in items] == list(range(500))


async def test_unsubscribe_stops_delivery(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("x")
    await b.subscribe("y")
    await b.unsubscribe("x")
    await b.unsubscribe("x")  # idempotent
    await b.publish("x", "gone")
    await b.publish("y", "here")
    await inbox.wait_for(1)
    await asyncio.sleep(0.05)
    assert inbox.items == [("y", "here")]


async def test_ping(broker: tuple[Broker, Inbox]) -> None:
    await broker[0].ping()


@pytest.mark.redis
async def test_two_processes_see_each_others_publishes() -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = RedisBroker.connect(url, prefix=prefix), RedisBroker.connect(url, prefix=prefix)
    other = RedisBroker.connect(url, prefix=unique_prefix())  # another site on the same Redis
    inbox_other = Inbox()
    await a.start(inbox_a)
    await b.start(inbox_b)
    await other.start(inbox_other)
    try:
        for broker in (a, b, other):
            await broker.subscribe("room:r")
        await a.publish("room:r", "from a")
        await b.publish("room:r", "from b")
        assert await inbox_a.wait_for(2) == [("room:r", "from a"), ("room:r", "from b")]
        assert await inbox_b.wait_for(2) == [("room:r", "from a"), ("room:r", "from b")]
        await asyncio.sleep(0.05)
        assert inbox_other.items == []
    finally:
        for broker in (a, b, other):
            await broker.stop()


@pytest.mark.redis
async def test_a_failing_handler_does_not_stop_the_listener() -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    seen: list[str] = []
    done = asyncio.Event()
    ran: list[str] = []

    def handler(channel: str, payload: str) -> Coroutine[None, None, None] | None:
        seen.append(payload)
        if payload == "boom":
            raise RuntimeError("handler bug")
        if payload.startswith("async"):

            async def later() -> None:
                await asyncio.sleep(0.01 if payload == "async1" else 0)
                ran.append(payload)
                if payload == "async2":
                    done.set()

            return later()  # run after the previous one finished
        return None

    b = RedisBroker.connect(url, prefix=prefix)
    await b.start(handler)
    try:
        await b.subscribe("c")
        for payload in ("boom", "async1", "async2"):
            await b.publish("c", payload)
        await asyncio.wait_for(done.wait(), 5)
        assert seen == ["boom", "async1", "async2"]
        assert ran == ["async1", "async2"]
    finally:
        await b.stop()


def test_backoff_is_jittered_exponential_and_capped() -> None:
    for attempt in range(12):
        ceiling = min(5.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.redis
async def test_listener_reconnects_and_resubscribes_after_redis_restarts(tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path).start()
    inbox = Inbox()
    b = RedisBroker.connect(private.url, prefix="p:", backoff_cap=0.5, health_interval=0.5)
    publisher = RedisBroker.connect(private.url, prefix="p:")
    await b.start(inbox)
    await publisher.start(lambda c, p: None)
    try:
        await b.subscribe("room:r")
        await publisher.publish("room:r", "before")
        await inbox.wait_for(1)

        private.kill()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await publisher.publish("room:r", "while down")
        with pytest.raises(BrokerUnavailable):  # fails fast now
            await publisher.publish("room:r", "while down")
        assert time.monotonic() - started < 3
        async with asyncio.timeout(5):
            while b.connected.is_set():
                await asyncio.sleep(0.02)
        with pytest.raises(BrokerUnavailable):
            await b.ping()
        await b.subscribe("room:later")  # remembered, subscribed on reconnect

        private.start()
        async with asyncio.timeout(10):
            while not b.connected.is_set():
                await asyncio.sleep(0.02)
        await b.ping()
        assert b.reconnects >= 1
        await asyncio.sleep(PUBLISH_FAIL_FAST_WAIT)
        await publisher.publish("room:r", "after")
        await publisher.publish("room:later", "later")
        items = await inbox.wait_for(3)
        assert items == [("room:r", "before"), ("room:r", "after"), ("room:later", "later")]
    finally:
        await b.stop()
        await publisher.stop()
        private.kill()


PUBLISH_FAIL_FAST_WAIT = 1.1
