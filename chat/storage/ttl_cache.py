"""A small cache whose entries live a fixed time and whose loads are shared.

Concurrent lookups of a missing key share one load instead of each starting
its own: 256 handshakes of one user in flight read its row once, not 256 times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """`get(key, load)`: the value loaded less than `ttl` seconds ago, or a new load."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, asyncio.Task[V]]] = {}

    async def get(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] >= self._ttl:
            if len(self._entries) >= self._max:
                self._entries.clear()
            # A task of its own: a caller that gives up does not cancel the others' load.
            entry = (now, asyncio.ensure_future(load()))
            self._entries[key] = entry
            entry[1].add_done_callback(partial(self._forget_failed, key, entry))
        return await asyncio.shield(entry[1])

    def _forget_failed(
        self, key: K, entry: tuple[float, asyncio.Task[V]], task: asyncio.Task[V]
    ) -> None:
        if (task.cancelled() or task.exception() is not None) and self._entries.get(key) is entry:
            del self._entries[key]  # the next lookup loads again

    def drop(self, key: K) -> None:
        """Forget `key`: the next lookup loads it again (one in flight finishes as it is)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
