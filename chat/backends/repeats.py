"""Repeated events counted for alerts (the `Repeats` protocol), per process or site-wide.

"Alert when a user is closed for flooding 3 times in 10 minutes" must count the
closes wherever they happen: a flooder spread over several processes would
otherwise never reach the threshold on any of them. `memory_repeats` counts in
this process; `redis_repeats` counts for the whole site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Repeats(Protocol):
    threshold: int

    async def hit(self, key: str) -> bool:
        """Count one event for `key`; True exactly when it reaches `threshold` within
        the window and has not fired within the last window."""


# (name, threshold, window seconds) -> a counter; `name` keeps counters apart.
RepeatsFactory = Callable[[str, int, float], Repeats]
