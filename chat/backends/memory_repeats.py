"""Repeated events counted in this process (a sliding window per key)."""

from __future__ import annotations

import time
from collections import deque

MAX_KEYS = 10_000  # keys tracked before idle ones are forgotten


class RepeatCounter:
    """Counts events per key in a sliding window; fires once per key per window.

    `count(key)` is True exactly when the key reaches `threshold` events within
    `window` seconds and has not fired within the last `window` seconds; `hit`
    is the same for the `Repeats` protocol.
    """

    def __init__(self, threshold: int, window: float, max_keys: int = MAX_KEYS) -> None:
        self.threshold = threshold
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._fired: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str) -> bool:
        return self.count(key)

    def count(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self._max_keys:
                self._forget(now)
            events = self._events[key] = deque()
        events.append(now)
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.threshold:
            return False
        fired = self._fired.get(key)
        if fired is not None and now - fired < self.window:
            return False
        self._fired[key] = now
        events.clear()
        return True

    def _forget(self, now: float) -> None:
        for key, events in list(self._events.items()):
            if not events or events[-1] <= now - self.window:
                del self._events[key]
                self._fired.pop(key, None)
        if len(self._events) >= self._max_keys:  # all busy: drop the oldest half
            for key in list(self._events)[: self._max_keys // 2]:
                del self._events[key]
                self._fired.pop(key, None)
