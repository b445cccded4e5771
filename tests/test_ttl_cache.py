"""The shared-load cache behind token checks and task greetings (no server)."""

from __future__ import annotations

import asyncio

import pytest

from chat.storage.ttl_cache import TTLCache


class Loader:
    def __init__(self, value: str = "v") -> None:
        self.calls = 0
        self.value = value
        self.gate = asyncio.Event()
        self.fail = False

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database down")
        return f"{self.value}{self.calls}"


async def test_concurrent_lookups_share_one_load() -> None:
    cache: TTLCache[int, str] = TTLCache(ttl=10, max_entries=10)
    load = Loader()
    waiters = [asyncio.create_task(cache.get(1, load)) for _ in range(50)]
    await asyncio.sleep(0)
    load.gate.set()
    assert await asyncio.gather(*waiters) == ["v1"] * 50
    assert load.calls == 1
    assert await cache.get(1, load) == "v1"  # still fresh


async def test_an_entry_expires_and_drop_forgets_it() -> None:
    cache: TTLCache[int, str] = TTLCache(ttl=0.05, max_entries=10)
    load = Loader()
    load.gate.set()
    assert await cache.get(1, load) == "v1"
    await asyncio.sleep(0.06)
    assert await cache.get(1, load) == "v2"
    cache.drop(1)
    assert await cache.get(1, load) == "v3"


async def test_a_failed_load_is_not_kept() -> None:
    cache: TTLCache[int, str] = TTLCache(ttl=10, max_entries=10)
    load = Loader()
    load.fail = True
    load.gate.set()
    with pytest.raises(RuntimeError):
        await cache.get(1, load)
    load.fail = False
    assert await cache.get(1, load) == "v2"


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    cache: TTLCache[int, str] = TTLCache(ttl=10, max_entries=10)
    load = Loader()
    first = asyncio.create_task(cache.get(1, load))
    second = asyncio.create_task(cache.get(1, load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    assert await second == "v1"
    assert first.cancelled()
